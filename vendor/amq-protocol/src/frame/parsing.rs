/// Traits required for parsing
pub use crate::types::parsing::traits;
use crate::{
    frame::*,
    protocol::{basic::parse_properties, *},
    types::parsing::*,
};
use nom::{
    Parser,
    bytes::streaming::{tag, take},
    combinator::{all_consuming, flat_map, map, map_opt, map_res},
    error::context,
};
use traits::ParsableInput;

/// Parse a channel id
pub fn parse_channel<I: ParsableInput>(i: I) -> ParserResult<I, AMQPChannel> {
    context("parse_channel", map(parse_id, From::from)).parse(i)
}

/// Parse the protocol header
pub fn parse_protocol_header<I: ParsableInput>(i: I) -> ParserResult<I, ProtocolVersion> {
    context(
        "parse_protocol_header",
        map(
            (
                tag(&metadata::NAME.as_bytes()[1..]),
                tag(&[0][..]),
                parse_short_short_uint,
                parse_short_short_uint,
                parse_short_short_uint,
            ),
            |(_, _, major, minor, revision)| ProtocolVersion {
                major,
                minor,
                revision,
            },
        ),
    )
    .parse(i)
}

/// Parse the frame type
pub fn parse_frame_type<I: ParsableInput>(i: I) -> ParserResult<I, AMQPFrameType> {
    context(
        "parse_frame_type",
        map_opt(parse_short_short_uint, |method| match method {
            c if c == metadata::NAME.as_bytes()[0] => Some(AMQPFrameType::ProtocolHeader),
            constants::FRAME_METHOD => Some(AMQPFrameType::Method),
            constants::FRAME_HEADER => Some(AMQPFrameType::Header),
            constants::FRAME_BODY => Some(AMQPFrameType::Body),
            constants::FRAME_HEARTBEAT => Some(AMQPFrameType::Heartbeat),
            _ => None,
        }),
    )
    .parse(i)
}

/// Parse a full AMQP Frame (with contents)
pub fn parse_frame<I: ParsableInput>(i: I) -> ParserResult<I, AMQPFrame> {
    context(
        "parse_frame",
        flat_map(parse_frame_type, move |frame_type| {
            move |i: I| match frame_type {
                AMQPFrameType::ProtocolHeader => {
                    map(parse_protocol_header, AMQPFrame::ProtocolHeader).parse(i)
                }
                frame_type => map_res(
                    parse_raw_frame(frame_type),
                    |AMQPRawFrame {
                         channel_id,
                         frame_type,
                         payload,
                     }: AMQPRawFrame<I>| match frame_type {
                        // This should be unreachable be better have a sensitive value anyways
                        AMQPFrameType::ProtocolHeader => {
                            Ok(AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()))
                        }
                        AMQPFrameType::Method => all_consuming(parse_class)
                            .parse(payload)
                            .map(|(_, m)| AMQPFrame::Method(channel_id, m)),
                        AMQPFrameType::Header => all_consuming(parse_content_header)
                            .parse(payload)
                            .map(|(_, h)| AMQPFrame::Header(channel_id, h)),
                        AMQPFrameType::Body => Ok(AMQPFrame::Body(
                            channel_id,
                            payload.iter_elements().collect(),
                        )),
                        AMQPFrameType::Heartbeat => Ok(if channel_id == 0 {
                            AMQPFrame::Heartbeat
                        } else {
                            AMQPFrame::InvalidHeartbeat(channel_id)
                        }),
                    },
                )
                .parse(i),
            }
        }),
    )
    .parse(i)
}

/// Parse a raw AMQP frame
pub fn parse_raw_frame<I: ParsableInput>(
    frame_type: AMQPFrameType,
) -> impl FnMut(I) -> ParserResult<I, AMQPRawFrame<I>> {
    move |i: I| {
        context(
            "parse_raw_frame",
            flat_map((parse_id, parse_long_uint), move |(channel_id, size)| {
                map(
                    (take(size), tag(&[constants::FRAME_END][..])),
                    move |(payload, _)| AMQPRawFrame {
                        frame_type,
                        channel_id,
                        payload,
                    },
                )
            }),
        )
        .parse(i)
    }
}

/// Parse a content header frame
///
/// Properties this crate cannot represent do not fail the frame: see
/// [`parse_properties_or_marker`].
pub fn parse_content_header<I: ParsableInput>(i: I) -> ParserResult<I, AMQPContentHeader> {
    context(
        "parse_content_header",
        map(
            (
                parse_id,
                parse_short_uint,
                parse_long_long_uint,
                context("parse_properties", parse_properties_or_marker),
            ),
            // weight is always 0 per the spec and unused; accept any value for compatibility
            |(class_id, _weight, body_size, properties)| AMQPContentHeader {
                class_id,
                body_size,
                properties,
            },
        ),
    )
    .parse(i)
}

/// Parse the basic properties that end a content header (`i` holds nothing after them).
/// They are first checked without recursion; when something in them cannot be represented — a
/// short string that is not UTF-8, headers nested deeper than
/// [`MAX_NESTING_DEPTH`](crate::types::parsing::MAX_NESTING_DEPTH), a value of an unknown type,
/// a length past the end — the result holds what could be read plus
/// [`UNREADABLE_PROPERTIES_HEADER`](crate::protocol::UNREADABLE_PROPERTIES_HEADER) saying what
/// was left out, and the whole input is consumed. The broker accepted and delivers such a
/// message; failing the frame would close the connection over it, every time it is delivered.
pub fn parse_properties_or_marker<I: ParsableInput>(
    i: I,
) -> ParserResult<I, basic::AMQPProperties> {
    let bytes: Vec<u8> = i.iter_elements().collect();
    match unreadable::check_properties(&bytes) {
        unreadable::Checked::Readable => parse_properties(i),
        unreadable::Checked::Unreadable(props) => Ok((i.take_from(i.input_len()), props)),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_protocol_header() {
        assert_eq!(
            parse_frame(&[b'A', b'M', b'Q', b'P', 0, 0, 9, 1][..]),
            Ok((
                &[][..],
                AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1())
            ))
        );
    }

    #[test]
    fn test_heartbeat() {
        assert_eq!(
            parse_frame(&[8, 0, 0, 0, 0, 0, 0, 206][..]),
            Ok((&[][..], AMQPFrame::Heartbeat))
        );
        assert_eq!(
            parse_frame(&[8, 0, 1, 0, 0, 0, 0, 206][..]),
            Ok((&[][..], AMQPFrame::InvalidHeartbeat(1)))
        );
    }

    use crate::protocol::UNREADABLE_PROPERTIES_HEADER;
    use crate::types::{AMQPValue, FieldTable, LongString, parsing::MAX_NESTING_DEPTH};

    /// A content-header frame on channel 1 for a 3-byte body, with these encoded properties.
    fn header_frame(props: &[u8]) -> Vec<u8> {
        let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        payload.extend_from_slice(props);
        let mut f = vec![constants::FRAME_HEADER, 0, 1];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f.push(constants::FRAME_END);
        f
    }

    fn short(s: &[u8]) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s);
        v
    }

    /// `depth` tables, each the only value (`k`) of the one around it.
    fn nested_table(depth: usize) -> Vec<u8> {
        // Outermost first: level k (of `depth`) is 7 * (depth - k) bytes after its length.
        let mut out = Vec::with_capacity(7 * depth);
        for k in 1..depth {
            out.extend_from_slice(&((7 * (depth - k)) as u32).to_be_bytes());
            out.extend_from_slice(&[1, b'k', b'F']);
        }
        out.extend_from_slice(&0u32.to_be_bytes());
        out
    }

    fn parsed_header(frame: &[u8]) -> AMQPContentHeader {
        match parse_frame(frame) {
            Ok((rest, AMQPFrame::Header(1, h))) if rest.is_empty() => h,
            other => panic!("not a header frame: {other:?}"),
        }
    }

    fn marker(h: &AMQPContentHeader) -> Option<String> {
        match h
            .properties
            .headers()
            .as_ref()?
            .inner()
            .get(UNREADABLE_PROPERTIES_HEADER)?
        {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn readable_properties_parse_as_before() {
        // message_id + delivery_mode + headers {a: "b"}.
        let mut props = vec![0b0011_0000, 0b1000_0000];
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongString(LongString::from("b")));
        props.extend_from_slice(&[0, 0, 0, 8, 1, b'a', b'S', 0, 0, 0, 1, b'b']);
        props.push(2);
        props.extend_from_slice(&short(b"id-1"));
        let h = parsed_header(&header_frame(&props));
        assert_eq!(h.body_size, 3);
        assert_eq!(marker(&h), None);
        assert_eq!(
            h.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("id-1")
        );
        assert_eq!(*h.properties.delivery_mode(), Some(2));
        assert_eq!(h.properties.headers().as_ref(), Some(&t));
        let (_, direct) = parse_properties(&props[..]).unwrap();
        assert_eq!(h.properties, direct);
    }

    #[test]
    fn a_non_utf8_short_string_is_left_out_not_fatal() {
        // message_id = "bad\xff", type = "ok", app_id = "\xfe".
        let mut props = vec![0b0000_0000, 0b1010_1000];
        props.extend_from_slice(&short(b"bad\xff"));
        props.extend_from_slice(&short(b"ok"));
        props.extend_from_slice(&short(b"\xfe"));
        let h = parsed_header(&header_frame(&props));
        assert_eq!(h.body_size, 3);
        assert_eq!(*h.properties.message_id(), None);
        assert_eq!(h.properties.kind().as_ref().map(|s| s.as_str()), Some("ok"));
        assert_eq!(*h.properties.app_id(), None);
        let why = marker(&h).unwrap();
        assert!(why.contains("`message_id` is not UTF-8"), "{why}");
        assert!(why.contains("`app_id` is not UTF-8"), "{why}");
    }

    #[test]
    fn deep_headers_are_left_out_without_recursing() {
        for depth in [MAX_NESTING_DEPTH + 1, 2_000, 10_000] {
            // headers {deep: <depth - 1 tables>, keep: 7} + message_id "m".
            let deep = nested_table(depth - 1);
            let mut entries = short(b"deep");
            entries.push(b'F');
            entries.extend_from_slice(&deep);
            entries.extend_from_slice(&short(b"keep"));
            entries.extend_from_slice(&[b'I', 0, 0, 0, 7]);
            let mut props = vec![0b0010_0000, 0b1000_0000];
            props.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            props.extend_from_slice(&entries);
            props.extend_from_slice(&short(b"m"));
            let h = parsed_header(&header_frame(&props));
            let why = marker(&h).unwrap();
            assert!(
                why.contains("header `deep`: nested deeper than 64 levels"),
                "{why}"
            );
            let headers = h.properties.headers().clone().unwrap();
            assert_eq!(headers.inner().get("keep"), Some(&AMQPValue::LongInt(7)));
            assert!(headers.inner().get("deep").is_none());
            assert_eq!(
                h.properties.message_id().as_ref().map(|s| s.as_str()),
                Some("m")
            );
        }
        // 64 levels in all (the headers table is level 1) is still read.
        let deep = nested_table(MAX_NESTING_DEPTH - 1);
        let mut entries = short(b"deep");
        entries.push(b'F');
        entries.extend_from_slice(&deep);
        let mut props = vec![0b0010_0000, 0];
        props.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        props.extend_from_slice(&entries);
        assert_eq!(marker(&parsed_header(&header_frame(&props))), None);
    }

    #[test]
    fn keys_and_types_it_cannot_read_are_named() {
        // headers {"\xff": V, "u": '?' …}: the unknown type ends what can be delimited.
        let mut entries = short(b"\xff");
        entries.push(b'V');
        entries.extend_from_slice(&short(b"u"));
        entries.extend_from_slice(&[b'?', 1, 2]);
        let mut props = vec![0b0010_0000, 0];
        props.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        props.extend_from_slice(&entries);
        let why = marker(&parsed_header(&header_frame(&props))).unwrap();
        assert!(why.contains("key is not UTF-8"), "{why}");
        assert!(why.contains("unknown type 0x3f"), "{why}");
        // Properties cut short: what was read is kept, the rest named.
        let mut props = vec![0b0000_0000, 0b1000_0000, 9, b'a'];
        props.truncate(4);
        let why = marker(&parsed_header(&header_frame(&props))).unwrap();
        assert!(why.contains("end inside `message_id`"), "{why}");
    }

    #[test]
    fn a_deep_table_in_a_method_frame_fails_without_overflowing() {
        // queue.declare with arguments nested 100,000 deep: an error, not a stack overflow.
        let mut payload = vec![0, 50, 0, 10, 0, 0];
        payload.extend_from_slice(&short(b"q"));
        payload.push(0);
        payload.extend_from_slice(&nested_table(100_000));
        let mut f = vec![constants::FRAME_METHOD, 0, 1];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(&payload);
        f.push(constants::FRAME_END);
        assert!(parse_frame(&f[..]).is_err());
    }

    /// The cost of the check, against the plain parse of the same typical properties
    /// (`cargo test -p amq-protocol --release -- --ignored --nocapture check_cost`).
    #[test]
    #[ignore]
    fn check_cost() {
        use crate::types::{AMQPValue, FieldArray, FieldTable, LongString};
        let mut death = FieldTable::default();
        for (k, v) in [
            ("queue", "email.v2"),
            ("reason", "rejected"),
            ("exchange", "email"),
        ] {
            death.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("email.v2"),
            )])),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(LongString::from("email.v2")),
        );
        let props = basic::AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("0b9a3a4e-1f7c-4e55-9d0a-8f1f5b8f2c11".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let mut buf = vec![0u8; 4096];
        let n = match cookie_factory::r#gen(basic::gen_properties(&props), &mut buf[..]) {
            Ok((_, n)) => n as usize,
            Err(e) => unreachable!("{e:?}"),
        };
        let bytes = &buf[..n];
        assert_eq!(parse_properties_or_marker(bytes).map(|(_, p)| p), Ok(props));
        // Alternating batches, the fastest of each kept: the box may be busy.
        let rounds = 20_000u32;
        let time = |f: &dyn Fn() -> bool| {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(f());
            }
            t.elapsed().as_nanos() as f64 / f64::from(rounds)
        };
        let (mut plain, mut checked) = (f64::MAX, f64::MAX);
        for _ in 0..15 {
            plain = plain.min(time(&|| {
                parse_properties(std::hint::black_box(bytes)).is_ok()
            }));
            checked = checked.min(time(&|| {
                parse_properties_or_marker(std::hint::black_box(bytes)).is_ok()
            }));
        }
        println!(
            "{n}-byte properties: parse {plain:.0} ns, check + parse {checked:.0} ns ({:.2}x)",
            checked / plain
        );
    }

    #[test]
    fn test_parse_declare_queue_frame() {
        let frame = AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "some_queue".into(),
                passive: true,
                durable: true,
                exclusive: true,
                auto_delete: true,
                nowait: true,
                arguments: Default::default(),
            })),
        );

        let mut buffer = vec![0u8; 30];

        assert!(gen_frame(&frame)(buffer.as_mut_slice().into()).is_ok());
        assert_eq!(parse_frame(buffer.as_slice()), Ok((&[][..], frame)));
    }
}
