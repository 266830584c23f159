//! The module graph of `cli/src` points one way, with no cycle anywhere:
//! the base of `stack/` under the kinds, the kinds under plan and apply,
//! `session` under `commands` and `dev`, `commands` on top. Read from the
//! source's `crate::…` and `super::…` paths (test modules left out), so a
//! new import that closes a cycle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`stack::table`) → the modules its code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths a `use` tree or an inline path names, `{…}` groups expanded:
/// `super::{a, b::{C, d}}` → `super::a`, `super::b::C`, `super::b::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&head, &body[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !body[start..].trim().is_empty() {
        expand(&head, &body[start..], out);
    }
}

/// Every `crate::`/`super::` path in `code`, as text from its root on.
fn named_paths(code: &str) -> Vec<String> {
    let mut out = vec![];
    for root in ["crate::", "super::"] {
        for (at, _) in code.match_indices(root) {
            if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at..];
            // A path runs to the end of its `{…}` group or the first character
            // that cannot be in one.
            let (mut depth, mut end) = (0i32, rest.len());
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':' || c == '*') => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
                if depth == 0 && c == '}' {
                    end = i + 1;
                    break;
                }
            }
            expand("", &rest[..end], &mut out);
        }
    }
    out
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere; they sit at the end of their file.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let is_dir_module = file.file_stem().is_some_and(|s| s == "mod");
        for path in named_paths(code) {
            let mut segments: Vec<String> = if let Some(rest) = path.strip_prefix("crate::") {
                rest.split("::").map(str::to_string).collect()
            } else {
                // `super` of a mod.rs is its parent directory's module.
                let keep = parent.len().saturating_sub(if is_dir_module { 2 } else { 1 });
                let mut s: Vec<String> = parent[..keep].iter().map(|s| s.to_string()).collect();
                s.extend(path.trim_start_matches("super::").split("::").map(str::to_string));
                s
            };
            // The longest prefix that is a module of the crate is what is named.
            while !segments.is_empty() && !modules.contains(&segments.join("::")) {
                segments.pop();
            }
            let target = segments.join("::");
            if target != module && !target.is_empty() {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
        graph.entry(module).or_default();
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = vec![];
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        found: vec![],
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_paths_of_a_use_tree_are_read_whole() {
    assert_eq!(
        named_paths("use super::{api, plan::{Action, Kind}};\nlet x = crate::aws::Aws::new();"),
        [
            "crate::aws::Aws::new",
            "super::api",
            "super::plan::Action",
            "super::plan::Kind",
        ]
    );
}

#[test]
fn no_import_cycle_anywhere_in_the_crate() {
    let graph = graph();
    assert!(
        graph["stack::table"].contains("stack::base"),
        "the reader sees the kinds' imports: {graph:?}"
    );
    assert!(graph["commands"].contains("dev"), "and the commands': {graph:?}");
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}
