//! The host's layers, checked over its own source: dependencies between the
//! top-level modules of `host/src` point one way (down), with no cycle, and
//! the pairs that must not know each other do not.
//!
//! The graph is read with `syn` from every `crate::…` path in product code
//! (`use` trees, paths in types and expressions, and tokens inside macro
//! calls); `super::` paths that climb to the crate root count too. Code under
//! `#[cfg(test)]` is left out: a test may reach across layers to set a scene.
//! Doc comments are not code and are not read.
//!
//! `docs/ARCHITECTURE.md` explains the layers; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The host's top-level modules, lowest layer first. A module may use a
/// module of its own layer or of a lower one, never of a higher one; within
/// a layer the graph must have no cycle.
const LAYERS: &[&[&str]] = &[
    // Leaves: plain data and helpers.
    &["error", "cpu", "digest", "report", "tls"],
    &["principal", "signing", "manifest"],
    &["audit", "bundled"],
    // Plain tickets and workflows.
    &["ticket", "workflow"],
    // Durable state, and running a plugin: neither knows the other. Who
    // reads which ticket is decided beside them, over plain tickets.
    &["store", "runtime", "access"],
    &["shared"],
    &["auth", "intake", "oidc"],
    &["scheduler"],
    &["admin"],
    &["api"],
    &["cli"],
];

/// Pairs that must not depend on each other in the named direction, even
/// where the layers alone would allow it.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "store",
        "runtime",
        "the store keeps state; running plugins is above it",
    ),
    (
        "runtime",
        "store",
        "the runtime runs one call; what is durable is the scheduler's business",
    ),
    (
        "runtime",
        "scheduler",
        "the runtime knows nothing of tickets",
    ),
    (
        "store",
        "scheduler",
        "the store knows nothing of the scheduler",
    ),
    ("store", "api", "the store knows nothing of HTTP"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read host/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src`: `store/sled/mod.rs` is
/// `["store", "sled"]`, `ticket.rs` is `["ticket"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the top-level modules a file's product code names.
struct Uses<'a> {
    /// The file's module path, to resolve `super::`.
    here: &'a [String],
    /// Inline `mod x { … }` nesting inside the file.
    inline: Vec<String>,
    found: BTreeSet<String>,
}

impl Uses<'_> {
    /// Note a path given as its segments' names.
    fn path(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let target = match first.as_str() {
            "crate" => segments.get(1).cloned(),
            "super" => {
                // Climb from the module this code is in.
                let mut at: Vec<String> = self.here.to_vec();
                at.extend(self.inline.iter().cloned());
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    if at.pop().is_none() {
                        return;
                    }
                    rest = &rest[1..];
                }
                if at.is_empty() {
                    rest.first().cloned()
                } else {
                    Some(at[0].clone())
                }
            }
            _ => None,
        };
        if let Some(t) = target {
            self.found.insert(t);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.path(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.path(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                prefix.push("*".into());
                self.path(prefix);
                prefix.pop();
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: name` and `super :: …` sequences inside a macro's tokens.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let flat: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < flat.len() {
            match &flat[i] {
                proc_macro2::TokenTree::Group(g) => self.tokens(g.stream()),
                proc_macro2::TokenTree::Ident(id) if id == "crate" || id == "super" => {
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    loop {
                        let colons = matches!((flat.get(j), flat.get(j + 1)),
                            (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
                                if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, flat.get(j + 2)) {
                            (true, Some(proc_macro2::TokenTree::Ident(next))) => {
                                segments.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    self.path(&segments);
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.inline.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.inline.pop();
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.path(&segments);
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The graph between top-level modules: module -> (module it uses -> the
/// files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Read the graph of the crate at `src`.
fn read_graph(src: &Path) -> (BTreeSet<String>, Graph) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_path(src, f))
        .filter(|p| !p.is_empty() && p[0] != "lib" && p[0] != "main")
        .map(|p| p[0].clone())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let here = module_path(src, file);
        if here.is_empty() || here[0] == "lib" || here[0] == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
        let mut uses = Uses {
            here: &here,
            inline: Vec::new(),
            found: BTreeSet::new(),
        };
        uses.visit_file(&ast);
        let rel = file
            .strip_prefix(src)
            .expect("under src")
            .display()
            .to_string();
        for target in uses.found {
            // `crate::Error` and `crate::Result` are the error module's.
            let target = match target.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => target,
            };
            if target != here[0] && modules.contains(&target) {
                graph
                    .entry(here[0].clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    (modules, graph)
}

/// The cycles of `graph`: its strongly connected components of more than
/// one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, l);
                } else if self.on_stack.contains(w.as_str()) {
                    let l = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// Every way `graph` breaks the rules, one line each, naming the files.
fn violations(modules: &BTreeSet<String>, graph: &Graph) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut out = Vec::new();
    for m in modules {
        if !layer_of.contains_key(m.as_str()) {
            out.push(format!(
                "module `{m}` has no layer: add it to LAYERS in tests/all/layering.rs and to docs/ARCHITECTURE.md"
            ));
        }
    }
    for (from, targets) in graph {
        for (to, files) in targets {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            let files = files.join(", ");
            if to == "cli" {
                out.push(format!(
                    "`{from}` uses `cli` ({files}): nothing may use the command line"
                ));
            }
            if let (Some(a), Some(b)) = (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
                && b > a
            {
                out.push(format!(
                    "`{from}` (layer {a}) uses `{to}` (layer {b}), an upward import, in {files}"
                ));
            }
            if let Some((_, _, why)) = FORBIDDEN.iter().find(|(f, t, _)| f == from && t == to) {
                out.push(format!("`{from}` uses `{to}` in {files}: {why}"));
            }
        }
    }
    for cycle in cycles(graph) {
        let edges: Vec<String> = cycle
            .iter()
            .flat_map(|a| {
                graph[a]
                    .iter()
                    .filter(|(b, _)| cycle.contains(b))
                    .map(move |(b, files)| {
                        let files: Vec<&str> = files.iter().map(String::as_str).collect();
                        format!("{a} -> {b} ({})", files.join(", "))
                    })
            })
            .collect();
        out.push(format!(
            "a cycle between {}: {}",
            cycle.join(", "),
            edges.join("; ")
        ));
    }
    out
}

#[test]
fn the_host_modules_depend_downward_only_with_no_cycle() {
    let (modules, graph) = read_graph(&src_dir());
    // The scan saw the crate: its modules and the edges every host has.
    for m in ["store", "runtime", "scheduler", "api", "cli", "error"] {
        assert!(modules.contains(m), "module {m} not found: {modules:?}");
    }
    let edges: usize = graph.values().map(BTreeMap::len).sum();
    assert!(edges > 40, "only {edges} edges read: the scan is broken");
    for (from, to) in [
        ("scheduler", "store"),
        ("scheduler", "runtime"),
        ("api", "scheduler"),
        ("cli", "api"),
        ("store", "ticket"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains_key(to)),
            "the edge {from} -> {to} was not read: the scan is broken"
        );
    }
    let problems = violations(&modules, &graph);
    assert!(
        problems.is_empty(),
        "the host's layering is broken:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker itself, on a crate written for it: an upward import, a
/// cycle, a use of the command line and an unlisted module are each named.
#[test]
fn the_layering_check_names_an_upward_import_a_cycle_and_an_unplaced_module() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    let write = |name: &str, text: &str| {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "pub mod store; pub mod ticket; pub mod cli;\n");
    // store -> scheduler: upward; ticket <-> error: a cycle in one layer.
    write(
        "store/mod.rs",
        "use crate::scheduler::Scheduler;\nmod inner;\n",
    );
    write("store/inner.rs", "fn f() { super::super::ticket::g(); }\n");
    write("scheduler.rs", "pub struct Scheduler;\n");
    write(
        "ticket.rs",
        "pub fn g() { let _ = format!(\"{}\", crate::error::E); }\n",
    );
    write(
        "error.rs",
        "pub struct E; fn h() { crate::ticket::g(); crate::cli::run(); }\n",
    );
    write("cli.rs", "pub fn run() {}\n");
    write(
        "stray.rs",
        "#[cfg(test)]\nmod tests { use crate::cli::run; }\n",
    );
    let (modules, graph) = read_graph(src);
    assert!(graph["store"].contains_key("ticket"), "super::super:: read");
    assert!(
        graph["ticket"].contains_key("error"),
        "a path inside a macro read"
    );
    assert!(
        !graph.contains_key("stray"),
        "test code is left out: {graph:?}"
    );
    let problems = violations(&modules, &graph).join("\n");
    for expected in [
        "`store` (layer 4) uses `scheduler` (layer 7), an upward import, in store/mod.rs",
        "`store` uses `scheduler` in store/mod.rs: the store knows nothing of the scheduler",
        "a cycle between error, ticket",
        "`error` uses `cli` (error.rs): nothing may use the command line",
        "module `stray` has no layer",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}
