//! `layers`: checks that the kernel's top-level modules only use the ones below them.
//!
//! The layer order is the order of the `mod` declarations in `kernel/src/main.rs`, lowest first:
//! a module may name (`crate::x`, or `x` inside a `use crate::{..}` group) only modules declared
//! before it. An edge up the order fails the check, and so does any import cycle, which such an
//! edge always belongs to; both are printed with the file that makes the edge.
//!
//! The modules declared after a `// Services` comment line in `main.rs` must each carry
//! `#[forbid(unsafe_code)]`: the Linux-facing code reaches the hardware only through the layers.
//!
//! Test code is left out: files named `tests.rs` and `mod tests { .. }` blocks. Nothing imports a
//! test module (the registry finds tests through the `.ktests` linker section), so an edge from
//! one cannot close a loop in the code that runs, and a test may drive its layer from above (an
//! allocation storm on every CPU through cross-CPU calls).
//!
//! Why not `cargo modules dependencies --acyclic`: it builds rust-analyzer (minutes on a fresh CI
//! machine), sees only cycles, not edges against the declared order, and needs the kernel target's
//! configuration to resolve `cfg(target_os = "none")` modules. A scan of `crate::` paths is enough
//! here because the kernel names its modules through `crate::` paths only (no `super::super::`).
//!
//! Usage: `cargo run -p ktest --bin layers [KERNEL_SRC]` (default `kernel/src`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

/// One use of a lower (or higher) module: `from` names `to` in `file`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
}

fn main() -> ExitCode {
    let src = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src")
    });
    let main_rs = match fs::read_to_string(src.join("main.rs")) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("layers: cannot read {}: {e}", src.join("main.rs").display());
            return ExitCode::FAILURE;
        }
    };
    let order = layer_order(&main_rs);
    let mut files = Vec::new();
    for module in &order {
        for file in module_files(&src, module) {
            match fs::read_to_string(&file) {
                Ok(text) => files.push((module.clone(), file.strip_prefix(&src).unwrap_or(&file).display().to_string(), text)),
                Err(e) => {
                    eprintln!("layers: cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let edges = edges(&order, &files);
    let mut problems = check(&order, &edges);
    for module in services_allowing_unsafe(&main_rs) {
        problems.push(format!("{module} is declared as a service but lacks #[forbid(unsafe_code)]"));
    }
    if problems.is_empty() {
        println!("layers: {} modules, {} edges, all going down: {}", order.len(), edges.len(), order.join(" < "));
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("layers: {p}");
        }
        eprintln!("layers: the order (lowest first) is the `mod` order of kernel/src/main.rs: {}", order.join(" < "));
        ExitCode::FAILURE
    }
}

/// The top-level modules in declaration order.
fn layer_order(main_rs: &str) -> Vec<String> {
    let code = strip_comments(main_rs);
    let mut order = Vec::new();
    for line in code.lines() {
        let line = line.trim();
        let rest = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = rest.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            order.push(name.trim().to_string());
        }
    }
    order
}

/// The modules declared after the `// Services` comment of `main.rs` without
/// `#[forbid(unsafe_code)]` among the attributes right before them.
fn services_allowing_unsafe(main_rs: &str) -> Vec<String> {
    let mut in_services = false;
    let mut forbids = false;
    let mut out = Vec::new();
    for line in main_rs.lines().map(str::trim) {
        if line.starts_with("// Services") {
            in_services = true;
        } else if line.starts_with("#[") {
            forbids |= line.replace(' ', "").contains("forbid(unsafe_code)");
        } else if let Some(name) = line.strip_prefix("pub ").unwrap_or(line).strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            if in_services && !forbids {
                out.push(name.trim().to_string());
            }
            forbids = false;
        } else if !line.starts_with("//") && !line.is_empty() {
            forbids = false;
        }
    }
    out
}

/// `module.rs`, or every `.rs` file under `module/`, sorted.
fn module_files(src: &Path, module: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every edge between distinct top-level modules, test code left out.
fn edges(order: &[String], files: &[(String, String, String)]) -> BTreeSet<Edge> {
    let known: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let mut out = BTreeSet::new();
    for (module, file, text) in files {
        if Path::new(file).file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = strip_test_modules(&strip_comments(text));
        for name in crate_paths(&code) {
            if name != *module && known.contains(name.as_str()) {
                out.insert(Edge { from: module.clone(), to: name, file: file.clone() });
            }
        }
    }
    out
}

/// Edges up the order, and cycles, as messages; empty when the graph only goes down.
fn check(order: &[String], edges: &BTreeSet<Edge>) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut problems = Vec::new();
    for e in edges {
        if rank[e.to.as_str()] > rank[e.from.as_str()] {
            problems.push(format!("{} uses {}, a higher layer ({})", e.from, e.to, e.file));
        }
    }
    let graph: BTreeMap<&str, BTreeSet<&str>> = order
        .iter()
        .map(|m| (m.as_str(), edges.iter().filter(|e| e.from == *m).map(|e| e.to.as_str()).collect()))
        .collect();
    for cycle in cycles(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    problems
}

/// One cycle per strongly connected component of more than one module (or a self-loop), each
/// written as a path that returns to its start.
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    let mut in_cycle: BTreeSet<&str> = BTreeSet::new();
    for &start in graph.keys() {
        if in_cycle.contains(start) {
            continue;
        }
        // Depth-first search for a path from start back to start.
        let mut stack = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for &next in &graph[node] {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start);
                    in_cycle.extend(path.iter().copied());
                    found.push(cycle);
                    stack.clear();
                    break;
                }
                if seen.insert(next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    found
}

/// The text with `//` and `/* */` comments and the contents of string and char literals blanked,
/// lines kept.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("i is on a char boundary");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The code without its `mod tests { .. }` blocks.
fn strip_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "mod tests") {
        let after = &rest[at + "mod tests".len()..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with('{') {
            out.push_str(&rest[..at + "mod tests".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        let open = rest.len() - trimmed.len();
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The first place `word` occurs with no identifier character before or after it.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text[from..].find(word) {
        let at = from + pos;
        let before = text[..at].chars().next_back().is_some_and(ident);
        let after = text[at + word.len()..].chars().next().is_some_and(ident);
        if !before && !after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The first segment of every `crate::` path: `crate::a::b` gives `a`, `crate::{a::b, c}` gives
/// `a` and `c`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        out.push(name);
                        item_start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(main_rs: &str, files: &[(&str, &str, &str)]) -> Vec<String> {
        let order = layer_order(main_rs);
        let files: Vec<_> = files.iter().map(|(m, f, t)| (m.to_string(), f.to_string(), t.to_string())).collect();
        check(&order, &edges(&order, &files))
    }

    const MAIN: &str = "// lowest first\nmod cpu;\n#[cfg(x)]\nmod mm;\npub mod task;\n";

    #[test]
    fn the_order_is_the_mod_order_of_main() {
        assert_eq!(layer_order(MAIN), ["cpu", "mm", "task"]);
    }

    #[test]
    fn a_service_without_forbid_unsafe_fails() {
        let main = "mod cpu;\n// Services: forbid unsafe\n#[cfg(x)]\n#[forbid(unsafe_code)]\nmod demo;\n#[cfg(y)]\nmod fs;\n";
        assert_eq!(services_allowing_unsafe(main), ["fs"]);
        assert_eq!(layer_order(main), ["cpu", "demo", "fs"]);
    }

    #[test]
    fn edges_going_down_pass() {
        let files = [
            ("mm", "mm/mod.rs", "use crate::cpu::percpu;"),
            ("task", "task/platform.rs", "use crate::{cpu::{percpu, console}, mm};\nfn f() { crate::mm::alloc(); }"),
        ];
        assert_eq!(run(MAIN, &files), Vec::<String>::new());
    }

    #[test]
    fn an_injected_cycle_fails() {
        let files = [
            ("mm", "mm/mod.rs", "use crate::{cpu, task::sched};"),
            ("task", "task/platform.rs", "use crate::mm;"),
        ];
        let problems = run(MAIN, &files);
        assert!(problems.iter().any(|p| p == "mm uses task, a higher layer (mm/mod.rs)"), "{problems:?}");
        assert!(problems.iter().any(|p| p == "import cycle: mm -> task -> mm"), "{problems:?}");
    }

    #[test]
    fn an_edge_up_without_a_cycle_fails() {
        let files = [("cpu", "cpu/console.rs", "fn f() { crate::task::current(); }")];
        assert_eq!(run(MAIN, &files), ["cpu uses task, a higher layer (cpu/console.rs)"]);
    }

    #[test]
    fn comments_strings_and_test_code_are_left_out() {
        let files = [
            ("cpu", "cpu/a.rs", "// crate::task\n/* crate::mm */ const S: &str = \"crate::task\";"),
            ("cpu", "cpu/b.rs", "fn f() {}\n#[cfg(feature = \"ktest\")]\nmod tests { use crate::task; fn g() { if x { } } }\nfn h() {}"),
            ("mm", "mm/tests.rs", "use crate::task;"),
        ];
        assert_eq!(run(MAIN, &files), Vec::<String>::new());
    }

    #[test]
    fn code_after_a_test_module_is_still_scanned() {
        let files = [("cpu", "cpu/b.rs", "mod tests { fn g() {} }\nfn h() { crate::mm::x(); }")];
        assert_eq!(run(MAIN, &files), ["cpu uses mm, a higher layer (cpu/b.rs)"]);
    }

    #[test]
    fn macro_crate_paths_and_unknown_names_are_not_modules() {
        let files = [("cpu", "cpu/a.rs", "$crate::task::x(); crate::ensure!(true); my_crate::mm::y();")];
        assert_eq!(run(MAIN, &files), Vec::<String>::new());
    }
}
