//! The architecture, checked where Cargo cannot check it. The layers are crates
//! (docs/architecture.md), so an import a layer may not make does not build; these tests read the
//! manifests to keep the crates' dependency limits from drifting, and read the sources for the
//! rules that live inside one crate: the console's drawing reaches no operation, names come only
//! from the resolver, output only through the sanitising writer, files only through `files.rs`.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every source directory of the workspace: the binary's `src/` and each layer crate's.
fn source_roots() -> Vec<PathBuf> {
    let mut roots = vec![workspace().join("src")];
    let crates = std::fs::read_dir(workspace().join("crates")).unwrap();
    let mut layers: Vec<PathBuf> = crates.flatten().map(|e| e.path().join("src")).collect();
    layers.sort();
    roots.extend(layers);
    roots
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in source_roots() {
        rust_files(&root, &mut files);
    }
    files.sort();
    assert!(files.len() > 120, "only {} source files found", files.len());
    files
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

/// The `[dependencies]` of a member's manifest (dev-dependencies are the tests' business).
fn dependencies_of(member: &str) -> Vec<String> {
    let path = if member == "hopback" {
        workspace().join("Cargo.toml")
    } else {
        workspace().join("crates").join(member).join("Cargo.toml")
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

/// Each layer and what its manifest may never name: the layering, as a build fact.
const LIMITS: &[(&str, &[&str])] = &[
    (
        "hopback-core",
        &[
            "hopback-broker",
            "hopback-ops",
            "hopback-tui",
            "tokio",
            "lapin",
            "reqwest",
            "ratatui",
            "crossterm",
            "clap",
            "futures",
        ],
    ),
    (
        "hopback-broker",
        &["hopback-ops", "hopback-tui", "ratatui", "crossterm", "clap"],
    ),
    (
        "hopback-ops",
        &[
            "hopback-tui",
            "lapin",
            "reqwest",
            "ratatui",
            "crossterm",
            "clap",
        ],
    ),
    ("hopback-tui", &["lapin", "reqwest", "clap"]),
];

#[test]
fn each_layer_s_manifest_keeps_its_dependency_limits() {
    let mut broken = Vec::new();
    for (member, never) in LIMITS {
        let deps = dependencies_of(member);
        assert!(
            !deps.is_empty(),
            "{member} has no [dependencies]: wrong path?"
        );
        for d in deps.iter().filter(|d| never.contains(&d.as_str())) {
            broken.push(format!("{member} depends on {d}"));
        }
    }
    // The chain is whole: each layer builds on the one below it.
    for (member, below) in [
        ("hopback-broker", "hopback-core"),
        ("hopback-ops", "hopback-broker"),
        ("hopback-tui", "hopback-ops"),
        ("hopback", "hopback-tui"),
    ] {
        if !dependencies_of(member).iter().any(|d| d == below) {
            broken.push(format!("{member} does not build on {below}"));
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// Inside the console crate, `ui/` draws `app` state: it names no operation, broker call,
/// ledger or drill (neither through the crate's aliases nor the crates themselves).
#[test]
fn the_console_s_drawing_reaches_no_operation() {
    let ui = workspace().join("crates/hopback-tui/src/ui");
    let mut files = Vec::new();
    rust_files(&ui, &mut files);
    assert!(
        files.len() > 10,
        "only {} files under {}",
        files.len(),
        ui.display()
    );
    let forbidden = [
        "crate::ops",
        "crate::broker",
        "crate::ledger",
        "crate::drill",
        "hopback_ops",
        "hopback_broker",
    ];
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            let grouped = line.contains("use crate::{")
                && ["ops", "broker", "ledger", "drill"]
                    .iter()
                    .any(|m| line.contains(&format!("{m}::")) || line.contains(&format!(" {m},")));
            if grouped || forbidden.iter().any(|p| line.contains(p)) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "ui/ reaches past app state:\n{}",
        found.join("\n")
    );
}

/// The console crate re-exports nothing of the operations, the ledger, the drill or the broker:
/// what its views draw lives in the model crate, so no `pub use` detour can hand `ui/` an
/// operation's type.
#[test]
fn the_console_re_exports_no_lower_layer_s_types() {
    let root = workspace().join("crates/hopback-tui/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("hopback-tui/src/lib.rs") {
            continue; // the crate's own module aliases (`pub(crate)`), not a re-export
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("pub use ")
                && ["ops", "ledger", "drill", "broker"].iter().any(|m| {
                    t.contains(&format!("crate::{m}")) || t.contains(&format!("hopback_{m}"))
                })
            {
                found.push(format!("{}:{}: {}", f.display(), i + 1, t));
            }
        }
    }
    assert!(found.is_empty(), "re-export detours:\n{}", found.join("\n"));
}

/// Comments, doc comments, strings and char literals blanked out (line structure kept), so the
/// checks below read code only.
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
    let files = all_rust_files();
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("crates/hopback-core/src/topology.rs") {
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
const RAW_OUTPUT_ALLOWED: &[&str] = &["crates/hopback-tui/src/app/terminal.rs"];

/// Output is safe by construction (issue 18): nothing in `src/` prints raw outside `text.rs`.
#[test]
fn output_goes_only_through_the_sanitising_writer() {
    let files = all_rust_files();
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("crates/hopback-core/src/text.rs") {
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
    let files = all_rust_files();
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("crates/hopback-core/src/files.rs") {
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
