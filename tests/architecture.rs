//! The layering rules, enforced: every `src/**/*.rs` is read, the crate modules each top-level
//! module depends on (`use crate::x…`, grouped `use crate::{x, y::z}`, inline `crate::x::…`
//! paths, `super::` paths that climb out to the crate root) and the external crates it names
//! (`lapin`, `clap`, `ratatui`, `crossterm`) are extracted — comments, doc comments, strings and
//! char literals ignored — and checked against [`RULES`]. Each violation prints as
//! `src/file.rs:LINE: module → forbidden`.
//!
//! [`KNOWN_VIOLATIONS`] lists the ones being removed; the test also fails when one of them no
//! longer occurs, so the list can only shrink.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// External crates whose use is tracked.
const EXTERNAL_CRATES: [&str; 4] = ["lapin", "clap", "ratatui", "crossterm"];

/// Each top-level module and what it must not depend on (crate modules or external crates):
/// - `ui/` imports neither `ops/`, `broker/`, `ledger/` nor `drill/`;
/// - `broker/` imports no `ops/`; `config/` imports no `broker/`; `drill/` imports no `commands/`;
/// - `model/` imports no lapin, clap or ratatui;
/// - only `broker/` talks AMQP: `ops/`, `ledger/`, `drill/`, `model/`, `app/`, `ui/` and
///   `commands/` import no `lapin`;
/// - the exit-code-bearing `Failure` (`crate::error`) is the CLI's edge: only `commands/` (and
///   `main.rs`, outside the library) use it — every other module returns typed errors.
const RULES: &[(&str, &[&str])] = &[
    (
        "ui",
        &["ops", "broker", "ledger", "drill", "lapin", "error"],
    ),
    ("broker", &["ops", "error"]),
    ("config", &["broker", "error"]),
    ("drill", &["commands", "lapin", "error"]),
    ("model", &["lapin", "clap", "ratatui", "error"]),
    ("ops", &["lapin", "error"]),
    ("ledger", &["lapin", "error"]),
    ("app", &["lapin", "error"]),
    ("topology", &["error"]),
    ("commands", &["lapin"]),
];

/// Violations being removed in parallel work (file, `module → forbidden`). Remove an entry when
/// its violation is gone — the test fails on a stale entry, so this list only shrinks.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// One dependency found in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dep {
    line: usize,
    /// The crate module (`broker`) or external crate (`lapin`) depended on.
    target: String,
}

/// Is `c[i]` right after a byte-literal prefix `b` (`b'x'`, not `ab'`)?
fn byte_prefix(c: &[char], i: usize) -> bool {
    i > 0 && c[i - 1] == 'b' && (i < 2 || !(c[i - 2].is_alphanumeric() || c[i - 2] == '_'))
}

/// Blank out comments (line, block — nested — and doc comments), string literals (plain, byte,
/// raw) and char literals, keeping every newline so line numbers stay right.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            // Raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(c.len());
            for &ch in &c[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c[i] == '\'' && (!prev_ident || byte_prefix(&c, i)) {
            // A char literal ('x', '\n', '\'', '\u{1b}', '"', b'"') or a lifetime ('a, 'static).
            let end = if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 3; // past the escaped character, which may be a quote

                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                Some(j + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    let end = end.min(c.len());
                    for &ch in &c[i..end] {
                        blank(&mut out, ch);
                    }
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

/// Tokens of stripped source, each with its line.
fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Other('0'), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    other => Tok::Other(other),
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// The module path of a file under `src/` (`ui/widgets/gatebar.rs` → `[ui, widgets, gatebar]`,
/// `ops/mod.rs` → `[ops]`, `lib.rs` → `[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The top-level crate modules named right after a path reaches the crate root at `toks[i]`: one
/// identifier, or each item of a `{…}` group.
fn root_items(toks: &[(Tok, usize)], i: usize, out: &mut Vec<Dep>) {
    match toks.get(i) {
        Some((Tok::Ident(name), line)) if name != "self" => out.push(Dep {
            line: *line,
            target: name.clone(),
        }),
        Some((Tok::Open, _)) => {
            let mut depth = 0usize;
            let mut item_start = true;
            for (tok, line) in &toks[i + 1..] {
                match tok {
                    Tok::Open => depth += 1,
                    Tok::Close if depth == 0 => break,
                    Tok::Close => depth -= 1,
                    Tok::Comma if depth == 0 => {
                        item_start = true;
                        continue;
                    }
                    Tok::Ident(name) if item_start && depth == 0 && name != "self" => {
                        out.push(Dep {
                            line: *line,
                            target: name.clone(),
                        });
                    }
                    _ => {}
                }
                item_start = false;
            }
        }
        _ => {}
    }
}

/// Every crate module and tracked external crate `src` (the file `rel` under `src/`) depends on.
fn dependencies(rel: &Path, src: &str) -> Vec<Dep> {
    let code = strip_comments_and_literals(src);
    let toks = tokens(&code);
    let file_path = module_path(rel);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside the block).
    let mut inline_mods: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let ident = |k: usize| match toks.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: &Tok| toks.get(k).map(|(x, _)| x) == Some(t);
    for k in 0..toks.len() {
        let after_sep = k > 0 && is(k - 1, &Tok::PathSep);
        // `a::lapin` is not the crate lapin; a leading `::lapin` is.
        let continues_path = after_sep
            && k >= 2
            && matches!(toks[k - 2].0, Tok::Ident(_) | Tok::Other('>') | Tok::Close);
        match &toks[k].0 {
            Tok::Open => {
                depth += 1;
                if k >= 2
                    && ident(k - 2) == Some("mod")
                    && let Some(name) = ident(k - 1)
                {
                    inline_mods.push((name.to_string(), depth));
                }
            }
            Tok::Close => {
                if inline_mods.last().is_some_and(|(_, d)| *d == depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(name) if name == "crate" && !after_sep => {
                let macro_crate = k > 0 && is(k - 1, &Tok::Other('$'));
                if !macro_crate && is(k + 1, &Tok::PathSep) {
                    root_items(&toks, k + 2, &mut out);
                }
            }
            Tok::Ident(name) if name == "super" && !after_sep => {
                let mut here: Vec<String> = file_path.clone();
                here.extend(inline_mods.iter().map(|(n, _)| n.clone()));
                let mut j = k;
                while ident(j) == Some("super") && is(j + 1, &Tok::PathSep) {
                    here.pop();
                    j += 2;
                }
                // Still inside the file's top-level module: not a dependency on another one.
                if here.is_empty() && j > k {
                    root_items(&toks, j, &mut out);
                }
            }
            Tok::Ident(name) if EXTERNAL_CRATES.contains(&name.as_str()) && !continues_path => {
                let prev = k.checked_sub(1).and_then(ident);
                let extern_crate =
                    prev == Some("crate") && k >= 2 && ident(k - 2) == Some("extern");
                if is(k + 1, &Tok::PathSep) || prev == Some("use") || extern_crate {
                    out.push(Dep {
                        line: toks[k].1,
                        target: name.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    // A module depending on itself is no dependency.
    if let Some(top) = file_path.first() {
        out.retain(|d| &d.target != top);
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module → forbidden` for a dependency the rules forbid.
fn violation(module: &str, target: &str) -> Option<String> {
    RULES
        .iter()
        .find(|(m, _)| *m == module)
        .filter(|(_, forbidden)| forbidden.contains(&target))
        .map(|_| format!("{module} → {target}"))
}

#[test]
fn layering_rules_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 50, "only {} files under src/", files.len());

    let mut all_edges = BTreeSet::new();
    // (file, rule) → the lines where it happens.
    let mut found: Vec<(String, String, usize)> = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root.join("src")).unwrap_or(path);
        let shown = format!(
            "src/{}",
            rel.iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        );
        let src = std::fs::read_to_string(path).unwrap();
        let Some(module) = module_path(rel).first().cloned() else {
            continue; // lib.rs, main.rs: the roots only wire.
        };
        for dep in dependencies(rel, &src) {
            all_edges.insert((module.clone(), dep.target.clone()));
            if let Some(rule) = violation(&module, &dep.target) {
                found.push((shown.clone(), rule, dep.line));
            }
        }
    }
    // The scan must see the dependencies that are certainly there, or it proves nothing.
    for edge in [
        ("commands", "ledger"),
        ("broker", "lapin"),
        ("ui", "ratatui"),
        ("broker", "config"),
    ] {
        assert!(
            all_edges.contains(&(edge.0.to_string(), edge.1.to_string())),
            "the scan missed {} → {}: the parser is broken",
            edge.0,
            edge.1
        );
    }

    let known = |file: &str, rule: &str| KNOWN_VIOLATIONS.contains(&(file, rule));
    let new: Vec<String> = found
        .iter()
        .filter(|(file, rule, _)| !known(file, rule))
        .map(|(file, rule, line)| format!("{file}:{line}: {rule}"))
        .collect();
    let stale: Vec<String> = KNOWN_VIOLATIONS
        .iter()
        .filter(|(file, rule)| !found.iter().any(|(f, r, _)| f == file && r == rule))
        .map(|(file, rule)| format!("{file}: {rule}"))
        .collect();
    let mut report = String::new();
    if !new.is_empty() {
        report.push_str(&format!(
            "dependencies that break the layering rules ({}):\n  {}\n",
            new.len(),
            new.join("\n  ")
        ));
    }
    if !stale.is_empty() {
        report.push_str(&format!(
            "KNOWN_VIOLATIONS lists violations that no longer occur — remove them:\n  {}\n",
            stale.join("\n  ")
        ));
    }
    assert!(report.is_empty(), "{report}");
}

#[cfg(test)]
mod parser {
    use super::*;

    fn targets(rel: &str, src: &str) -> Vec<(usize, String)> {
        dependencies(Path::new(rel), src)
            .into_iter()
            .map(|d| (d.line, d.target))
            .collect()
    }

    #[test]
    fn grouped_imports_are_caught_and_comments_ignored() {
        let src = "// use crate::ops::gate;\n\
                   /// Calls crate::drill::run and lapin::Channel.\n\
                   /* crate::ledger::x /* nested crate::ops */ still comment */\n\
                   use crate::{app::Action, broker::{mgmt, session::Session}, self};\n\
                   fn f() { let s = \"crate::ops::x lapin::y\"; let q = '\"'; let b = b'\"'; let e = '\\''; }\n\
                   fn g<'a>(x: &'a str) { crate::ledger::read(x); let r = r#\"crate::drill\"#; }\n";
        assert_eq!(
            targets("ui/view.rs", src),
            vec![
                (4, "app".to_string()),
                (4, "broker".to_string()),
                (6, "ledger".to_string())
            ]
        );
    }

    #[test]
    fn super_paths_external_crates_and_same_module() {
        let src = "use super::theme;\n\
                   use super::super::ops::gate;\n\
                   use super::super::super::ops::gate;\n\
                   use lapin::{Channel, options::*};\n\
                   fn f(x: my::lapin::X) -> clap::Command { ::ratatui::init() }\n\
                   mod tests { use super::super::helper; }\n\
                   use crate::ui::widgets;\n";
        assert_eq!(
            targets("ui/widgets/gatebar.rs", src),
            vec![
                (3, "ops".to_string()),
                (4, "lapin".to_string()),
                (5, "clap".to_string()),
                (5, "ratatui".to_string())
            ]
        );
        // From a top module's mod.rs, one `super` reaches the crate root.
        assert_eq!(
            targets(
                "ops/mod.rs",
                "use super::broker::x;\nmod t { use super::*; }\n"
            ),
            vec![(1, "broker".to_string())]
        );
    }

    #[test]
    fn rules_name_the_forbidden_edges() {
        assert_eq!(violation("ui", "ops").as_deref(), Some("ui → ops"));
        assert_eq!(violation("model", "clap").as_deref(), Some("model → clap"));
        assert_eq!(violation("broker", "lapin"), None);
        assert_eq!(violation("broker", "clap"), None);
        assert_eq!(violation("drill", "clap"), None);
        assert_eq!(violation("text", "lapin"), None);
    }
}

/// Does this line spell a namespace object's name by hand (`format!("{ns}.dlq")`,
/// `"{}.{v}"`, …) instead of asking `topology::Namespace`?
fn spells_a_name(line: &str) -> bool {
    let Some(open) = line.find('"') else {
        return false;
    };
    let lit = &line[open..];
    [
        "}.dlq",
        "}.dlx",
        "}.parked",
        "}.unrouted",
        "}.v{",
        "}.{v}",
        "}.{version}",
    ]
    .iter()
    .any(|p| lit.contains(p))
}

/// One resolver of names (docs/architecture.md, "Parts"): outside `src/topology.rs` no code
/// (tests modules aside) builds `NS.dlq`, `NS.vN`, … with `format!`.
#[test]
fn names_come_only_from_the_resolver() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("topology.rs") && f.parent() == Some(root.as_path()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // Unit tests at the bottom of a file may spell fixtures.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            if !line.trim_start().starts_with("//") && spells_a_name(line) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "names spelled outside topology::Namespace:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_name_check_catches_a_spelling() {
    assert!(spells_a_name(r#"let q = format!("{ns}.dlq");"#));
    assert!(spells_a_name(r#"let q = format!("{}.{v}", ns);"#));
    assert!(!spells_a_name(r#"let q = names.dlq.clone();"#));
}

/// Does this code (comments and literals blanked) print to the terminal by itself — `println!`,
/// `print!`, `eprintln!`, `eprint!`, or a `write!`/`writeln!` straight into `stdout()` /
/// `stderr()` — instead of through `text::write_out` / `write_err` (`outln!`, `out!`, `errln!`,
/// `err!`), which sanitise everything?
fn prints_raw(code_line: &str) -> bool {
    let bare = |m: &str| {
        code_line.match_indices(m).any(|(i, _)| {
            // `outln!`, `errln!` (and `crate::…`) are the safe ones; a macro name must start here.
            i == 0
                || !code_line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    };
    // A handle on stdout/stderr used for anything but asking whether it is a terminal or
    // flushing (statements span lines, so the handle itself is what is looked for).
    let handle = ["stdout()", "stderr()"].iter().any(|h| {
        code_line.match_indices(h).any(|(i, _)| {
            let rest = &code_line[i + h.len()..];
            !(rest.starts_with(".is_terminal()")
                || rest.starts_with(".flush()")
                || rest.starts_with(")")
                    && code_line[..i]
                        .trim_end()
                        .ends_with("is_terminal(&std::io::"))
        })
    });
    bare("println!") || bare("print!") || bare("eprintln!") || bare("eprint!") || handle
}

/// Files that own a terminal handle for something other than text: the console's ratatui
/// backend and the shell-completion script (clap writes it).
const RAW_OUTPUT_ALLOWED: &[&str] = &["src/app/terminal.rs"];

/// Output is safe by construction (issue 18): nothing in `src/` prints raw outside `text.rs`.
#[test]
fn output_goes_only_through_the_sanitising_writer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("text.rs") && f.parent() == Some(root.as_path()) {
            continue;
        }
        if RAW_OUTPUT_ALLOWED.iter().any(|a| f.ends_with(a)) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let code = strip_comments_and_literals(&text);
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            // `hopback completions`: clap writes the script itself.
            if f.ends_with("main.rs") && line.contains("&mut std::io::stdout()") {
                continue;
            }
            if prints_raw(line) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "raw terminal output outside text.rs (use outln!/out!/errln!/err!):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_output_check_catches_a_raw_print() {
    assert!(prints_raw(r#"    println!("{x}");"#));
    assert!(prints_raw(r#"eprint!("{q}");"#));
    assert!(prints_raw(
        r#"let _ = writeln!(std::io::stderr(), "{line}");"#
    ));
    assert!(!prints_raw(r#"crate::outln!("{x}");"#));
    assert!(!prints_raw(r#"crate::errln!("{x}");"#));
    assert!(!prints_raw(r#"let _ = writeln!(s, "{x}");"#));
    assert!(prints_raw(r#"            std::io::stderr(),"#));
    assert!(!prints_raw(
        r#"    let tty = std::io::stderr().is_terminal();"#
    ));
    assert!(!prints_raw(
        r#"    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {"#
    ));
}

/// Does this code line (comments and literals blanked) create or open a file or directory for
/// writing by itself, instead of through `files.rs` (0600 files, 0700 directories)?
fn writes_a_file(code_line: &str) -> bool {
    [
        "OpenOptions",
        "fs::write(",
        "File::create",
        "DirBuilder",
        "create_dir(",
        "create_dir_all(",
        "set_permissions(",
    ]
    .iter()
    .any(|m| code_line.contains(m))
}

/// Every file hopback writes is private (issue 31, item 8): nothing in `src/` opens a file for
/// writing or makes a directory outside `files.rs`.
#[test]
fn files_are_written_only_through_files_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f == root.join("files.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let code = strip_comments_and_literals(&text);
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            if writes_a_file(line) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a file written outside files.rs (use crate::files::{{write, create, create_new, append, dir}}):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_file_check_catches_a_raw_write() {
    assert!(writes_a_file(r#"    std::fs::write(&p, &md)?;"#));
    assert!(writes_a_file(r#"let f = std::fs::OpenOptions::new()"#));
    assert!(writes_a_file(r#"std::fs::create_dir_all(dir).ok()?;"#));
    assert!(!writes_a_file(
        r#"crate::files::write(&p, md.as_bytes())?;"#
    ));
    assert!(!writes_a_file(r#"let f = std::fs::File::open(path)?;"#));
}
