//! Iterative checks of wire-format field tables and arrays, with no recursion: an explicit
//! stack bounded by the depth asked for, one pass over the bytes, no allocation beyond the
//! stack. They tell, before anything is parsed, whether the recursive parsers of
//! [`parsing`](crate::parsing) can read a table — not nested deeper than they accept, every key
//! UTF-8, every type known, every length inside its container — and where it ends, so a caller
//! can set aside what it cannot read instead of failing the frame that carries it.

use std::fmt;

/// What makes an encoded field table (or array) unreadable by this crate's parsers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Tables and arrays nested deeper than `max_depth`.
    TooDeep {
        /// The depth allowed.
        max_depth: usize,
    },
    /// A table key (a short string) that is not UTF-8.
    KeyNotUtf8,
    /// A value of a type this crate does not know; its size is unknown, so nothing after it in
    /// the same container can be delimited.
    UnknownType(u8),
    /// A length or value running past its container or the input.
    Truncated,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooDeep { max_depth } => {
                write!(f, "nested deeper than {max_depth} levels")
            }
            Problem::KeyNotUtf8 => f.write_str("a key is not UTF-8"),
            Problem::UnknownType(t) => write!(f, "a value of unknown type 0x{t:02x}"),
            Problem::Truncated => f.write_str("a length runs past its end"),
        }
    }
}

impl std::error::Error for Problem {}

/// An unreadable table or array: the first problem met, and the container's encoded length
/// (length prefix included) when the prefix itself could be read and fits the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The first problem met.
    pub problem: Problem,
    /// Bytes the whole container takes, when known.
    pub len: Option<usize>,
}

/// Check the encoded field table at the start of `input` (its 4-byte length first); a table is
/// depth 1, a table in it depth 2. `Ok(n)`: readable, `n` bytes long.
pub fn scan_field_table(input: &[u8], max_depth: usize) -> Result<usize, Unreadable> {
    scan_container(input, true, max_depth)
}

/// Check the encoded field array at the start of `input` (see [`scan_field_table`]).
pub fn scan_field_array(input: &[u8], max_depth: usize) -> Result<usize, Unreadable> {
    scan_container(input, false, max_depth)
}

/// Bytes taken by the value of type `type_id` at the start of `input` (its type byte already
/// read), checking a table or array in it as [`scan_field_table`] does with `max_depth` counted
/// from that container.
pub fn scan_value(type_id: u8, input: &[u8], max_depth: usize) -> Result<usize, Unreadable> {
    let unreadable = |problem| Unreadable { problem, len: None };
    match type_id {
        b'F' => scan_field_table(input, max_depth),
        b'A' => scan_field_array(input, max_depth),
        b'S' | b'x' => {
            let n = read_len(input, 0).ok_or_else(|| unreadable(Problem::Truncated))?;
            let end = 4usize
                .checked_add(n)
                .filter(|e| *e <= input.len())
                .ok_or_else(|| unreadable(Problem::Truncated))?;
            Ok(end)
        }
        t => {
            let n = fixed_size(t).ok_or_else(|| unreadable(Problem::UnknownType(t)))?;
            if n > input.len() {
                return Err(unreadable(Problem::Truncated));
            }
            Ok(n)
        }
    }
}

/// Size of a fixed-size value of type `t` (the type letters of
/// [`AMQPType::from_id`](crate::AMQPType::from_id)), `None` for the others.
fn fixed_size(t: u8) -> Option<usize> {
    Some(match t {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'L' | b'l' | b'd' | b'T' => 8,
        _ => return None,
    })
}

fn read_len(input: &[u8], at: usize) -> Option<usize> {
    let b = input.get(at..at.checked_add(4)?)?;
    usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
}

fn scan_container(input: &[u8], table: bool, max_depth: usize) -> Result<usize, Unreadable> {
    let truncated = Unreadable {
        problem: Problem::Truncated,
        len: None,
    };
    let outer = read_len(input, 0).ok_or_else(|| truncated.clone())?;
    let end = 4usize
        .checked_add(outer)
        .filter(|e| *e <= input.len())
        .ok_or(truncated)?;
    let fail = |problem| {
        Err(Unreadable {
            problem,
            len: Some(end),
        })
    };
    if max_depth == 0 {
        return fail(Problem::TooDeep { max_depth });
    }
    // (end, is a table) of every container we are inside, outermost first.
    let mut stack: Vec<(usize, bool)> = Vec::with_capacity(max_depth.min(64));
    stack.push((end, table));
    let mut pos = 4usize;
    let mut first_problem = None;
    while let Some(&(container_end, in_table)) = stack.last() {
        if pos >= container_end {
            // Every step below stays within its container, so this is its exact end.
            stack.pop();
            continue;
        }
        if in_table {
            let key_len = usize::from(input[pos]);
            let key_end = pos + 1 + key_len;
            if key_end >= container_end {
                // A key past the end, or a key with no value after it.
                return fail(Problem::Truncated);
            }
            if std::str::from_utf8(&input[pos + 1..key_end]).is_err() {
                first_problem.get_or_insert(Problem::KeyNotUtf8);
            }
            pos = key_end;
        }
        let type_id = input[pos];
        pos += 1;
        let within = &input[..container_end];
        match type_id {
            b'F' | b'A' => {
                let Some(inner_end) = read_len(within, pos)
                    .and_then(|n| (pos + 4).checked_add(n))
                    .filter(|e| *e <= container_end)
                else {
                    return fail(Problem::Truncated);
                };
                if stack.len() >= max_depth {
                    // Too deep: skip it whole by its length, without looking inside.
                    first_problem.get_or_insert(Problem::TooDeep { max_depth });
                    pos = inner_end;
                } else {
                    stack.push((inner_end, type_id == b'F'));
                    pos += 4;
                }
            }
            t => match scan_value(t, &within[pos..], max_depth) {
                Ok(n) => pos += n,
                Err(u) => return fail(u.problem),
            },
        }
    }
    match first_problem {
        None => Ok(end),
        Some(p) => fail(p),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::{AMQPValue, FieldArray, FieldTable, LongString, generation::gen_field_table};

    /// `depth` tables, each the only value of the one around it, encoded by hand.
    fn nested(depth: usize) -> Vec<u8> {
        // Outermost first: level k (of `depth`) is 7 * (depth - k) bytes after its length.
        let mut out = Vec::with_capacity(7 * depth);
        for k in 1..depth {
            out.extend_from_slice(&((7 * (depth - k)) as u32).to_be_bytes());
            out.extend_from_slice(&[1, b'k', b'F']);
        }
        out.extend_from_slice(&0u32.to_be_bytes());
        out
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        for depth in [1usize, 2, 63, 64] {
            let t = nested(depth);
            assert_eq!(scan_field_table(&t, 64), Ok(t.len()), "{depth}");
        }
        for depth in [65usize, 2_000, 100_000] {
            let t = nested(depth);
            assert_eq!(
                scan_field_table(&t, 64),
                Err(Unreadable {
                    problem: Problem::TooDeep { max_depth: 64 },
                    len: Some(t.len()),
                }),
                "{depth}"
            );
        }
        assert!(matches!(
            scan_field_table(&nested(1), 0),
            Err(Unreadable {
                problem: Problem::TooDeep { .. },
                ..
            })
        ));
    }

    #[test]
    fn agrees_with_the_generator_on_every_type() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-1));
        let mut t = FieldTable::default();
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("i8".into(), AMQPValue::ShortShortInt(-1));
        t.insert("u8".into(), AMQPValue::ShortShortUInt(1));
        t.insert("i16".into(), AMQPValue::ShortInt(-1));
        t.insert("u16".into(), AMQPValue::ShortUInt(1));
        t.insert("i32".into(), AMQPValue::LongInt(-1));
        t.insert("u32".into(), AMQPValue::LongUInt(1));
        t.insert("i64".into(), AMQPValue::LongLongInt(-1));
        t.insert("f".into(), AMQPValue::Float(1.5));
        t.insert("d".into(), AMQPValue::Double(1.5));
        t.insert(
            "dec".into(),
            AMQPValue::DecimalValue(crate::DecimalValue { scale: 2, value: 5 }),
        );
        t.insert("s".into(), AMQPValue::LongString(LongString::from("x")));
        t.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::FieldTable(inner.clone()),
            ])),
        );
        t.insert("ts".into(), AMQPValue::Timestamp(7));
        t.insert("t".into(), AMQPValue::FieldTable(inner));
        t.insert("x".into(), AMQPValue::ByteArray(vec![1u8, 2, 3].into()));
        t.insert("v".into(), AMQPValue::Void);
        let mut buf = vec![0u8; 4096];
        let len = match cookie_factory::r#gen(gen_field_table(&t), &mut buf[..]) {
            Ok((_, n)) => n as usize,
            Err(e) => unreachable!("the buffer is large enough: {e:?}"),
        };
        let bytes = &buf[..len];
        assert_eq!(scan_field_table(bytes, 64), Ok(len));
        // Depth: the array's table is at 3.
        assert!(scan_field_table(bytes, 2).is_err());
        assert_eq!(scan_field_table(bytes, 3), Ok(len));
        // Every cut is refused, never read past.
        for cut in 0..len {
            assert!(scan_field_table(&bytes[..cut], 64).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn keys_must_be_utf8_and_types_known() {
        // { "\xff": V }
        let t = [0, 0, 0, 3, 1, 0xff, b'V'];
        assert_eq!(
            scan_field_table(&t, 64).map_err(|u| u.problem),
            Err(Problem::KeyNotUtf8)
        );
        // { "k": '?' }
        let t = [0, 0, 0, 3, 1, b'k', b'?'];
        assert_eq!(
            scan_field_table(&t, 64),
            Err(Unreadable {
                problem: Problem::UnknownType(b'?'),
                len: Some(7)
            })
        );
        // An array holds values without keys: 0xff is not a key there but an unknown type.
        let a = [0, 0, 0, 1, 0xff];
        assert_eq!(
            scan_field_array(&a, 64).map_err(|u| u.problem),
            Err(Problem::UnknownType(0xff))
        );
    }
}
