//! What a module's syntax says about it, found statically: its `require`
//! calls (and whether each runs whatever happens at load), the names a
//! CommonJS module exports as `cjs-module-lexer` finds them (so that
//! `import { useState } from "react"` works), the packages it re-exports
//! whole, and the globals it uses that a browser lacks (`process`,
//! `global`).

use std::collections::{BTreeSet, HashMap};

use swc_core::common::SyntaxContext;
use swc_core::ecma::ast::{
    ArrowExpr, AssignExpr, AssignTarget, BinExpr, BinaryOp, CallExpr, Callee, Class, CondExpr,
    DoWhileStmt, Expr, ForInStmt, ForOfStmt, ForStmt, Function, Ident, IfStmt, Lit, MemberExpr,
    MemberProp, ObjectLit, Prop, PropName, PropOrSpread, SimpleAssignTarget, SwitchStmt, TryStmt,
    VarDeclarator, WhileStmt,
};
use swc_core::ecma::visit::{Visit, VisitWith};

/// A `require("…")` and whether it runs only under some condition (in a
/// function, a `try`, a branch or a loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Require {
    pub specifier: String,
    pub guarded: bool,
}

/// The string a literal holds, if it is a plain string or template.
pub fn string_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(Lit::Str(s)) => s.value.as_str().map(str::to_string),
        Expr::Tpl(t) if t.exprs.is_empty() && t.quasis.len() == 1 => {
            t.quasis[0].cooked.as_ref()?.as_str().map(str::to_string)
        }
        _ => None,
    }
}

/// Whether `expr` is the global (not a local binding) called `name`.
fn is_global(expr: &Expr, name: &str, unresolved: SyntaxContext) -> bool {
    matches!(expr, Expr::Ident(i) if i.sym == name && i.ctxt == unresolved)
}

/// The specifier of `require("…")` with the global `require`.
pub fn require_of(call: &CallExpr, unresolved: SyntaxContext) -> Option<String> {
    let Callee::Expr(callee) = &call.callee else {
        return None;
    };
    if !is_global(callee, "require", unresolved)
        || call.args.len() != 1
        || call.args[0].spread.is_some()
    {
        return None;
    }
    string_of(&call.args[0].expr)
}

/// `exports` or `module.exports`.
fn is_exports(expr: &Expr, unresolved: SyntaxContext) -> bool {
    is_global(expr, "exports", unresolved) || is_module_exports(expr, unresolved)
}

fn is_module_exports(expr: &Expr, unresolved: SyntaxContext) -> bool {
    match expr {
        Expr::Member(m) => {
            is_global(&m.obj, "module", unresolved)
                && prop_name(&m.prop).as_deref() == Some("exports")
        }
        _ => false,
    }
}

fn prop_name(prop: &MemberProp) -> Option<String> {
    match prop {
        MemberProp::Ident(i) => Some(i.sym.to_string()),
        MemberProp::Computed(c) => string_of(&c.expr),
        MemberProp::PrivateName(_) => None,
    }
}

/// Every `require("…")` of `node`.
pub fn requires<N: VisitWith<Requires>>(node: &N, unresolved: SyntaxContext) -> Vec<Require> {
    let mut visitor = Requires {
        unresolved,
        depth: 0,
        found: Vec::new(),
    };
    node.visit_with(&mut visitor);
    visitor.found
}

pub struct Requires {
    unresolved: SyntaxContext,
    /// How many conditions the node being visited is under.
    depth: usize,
    found: Vec<Require>,
}

impl Requires {
    fn guarded<N: VisitWith<Self>>(&mut self, node: &N) {
        self.depth += 1;
        node.visit_children_with(self);
        self.depth -= 1;
    }
}

impl Visit for Requires {
    fn visit_call_expr(&mut self, call: &CallExpr) {
        if let Some(specifier) = require_of(call, self.unresolved) {
            self.found.push(Require {
                specifier,
                guarded: self.depth > 0,
            });
        }
        call.visit_children_with(self);
    }

    fn visit_function(&mut self, n: &Function) {
        self.guarded(n)
    }
    fn visit_arrow_expr(&mut self, n: &ArrowExpr) {
        self.guarded(n)
    }
    fn visit_class(&mut self, n: &Class) {
        self.guarded(n)
    }
    fn visit_try_stmt(&mut self, n: &TryStmt) {
        self.guarded(n)
    }
    fn visit_if_stmt(&mut self, n: &IfStmt) {
        n.test.visit_with(self);
        self.depth += 1;
        n.cons.visit_with(self);
        n.alt.visit_with(self);
        self.depth -= 1;
    }
    fn visit_cond_expr(&mut self, n: &CondExpr) {
        n.test.visit_with(self);
        self.depth += 1;
        n.cons.visit_with(self);
        n.alt.visit_with(self);
        self.depth -= 1;
    }
    fn visit_bin_expr(&mut self, n: &BinExpr) {
        if matches!(
            n.op,
            BinaryOp::LogicalAnd | BinaryOp::LogicalOr | BinaryOp::NullishCoalescing
        ) {
            n.left.visit_with(self);
            self.depth += 1;
            n.right.visit_with(self);
            self.depth -= 1;
        } else {
            n.visit_children_with(self);
        }
    }
    fn visit_switch_stmt(&mut self, n: &SwitchStmt) {
        self.guarded(n)
    }
    fn visit_for_stmt(&mut self, n: &ForStmt) {
        self.guarded(n)
    }
    fn visit_for_in_stmt(&mut self, n: &ForInStmt) {
        self.guarded(n)
    }
    fn visit_for_of_stmt(&mut self, n: &ForOfStmt) {
        self.guarded(n)
    }
    fn visit_while_stmt(&mut self, n: &WhileStmt) {
        self.guarded(n)
    }
    fn visit_do_while_stmt(&mut self, n: &DoWhileStmt) {
        self.guarded(n)
    }
}

/// What a CommonJS module exports.
#[derive(Debug, Default)]
pub struct Exports {
    /// Names assigned on `exports` / `module.exports`.
    pub names: BTreeSet<String>,
    /// Specifiers whose exports it exports too (`module.exports =
    /// require("./x")`, `__exportStar(require("./x"), exports)`).
    pub reexports: Vec<String>,
}

/// The exports of a CommonJS module, by the forms `cjs-module-lexer`
/// reads: `exports.a =`, `module.exports.a =`, `exports["a"] =`,
/// `Object.defineProperty(exports, "a", …)`, `module.exports = { a, b }`
/// (esbuild's `0 && (module.exports = {…})` hint included), and the
/// re-exports of `module.exports = require(…)`, TypeScript's and tslib's
/// `__exportStar`, Babel's `_exportStar` / `Object.keys(_x).forEach(…)`.
pub fn exports<N: VisitWith<ExportScan>>(node: &N, unresolved: SyntaxContext) -> Exports {
    let mut scan = ExportScan {
        unresolved,
        required: HashMap::new(),
        found: Exports::default(),
    };
    node.visit_with(&mut scan);
    scan.found
}

pub struct ExportScan {
    unresolved: SyntaxContext,
    /// `var _x = require("x")` (or a helper's call on it): `_x` → `x`.
    required: HashMap<String, String>,
    found: Exports,
}

impl ExportScan {
    /// The specifier `expr` requires, directly or through a helper's call
    /// (`_interopRequireWildcard(require("x"))`) or a name bound to one.
    fn required_by(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Call(call) => require_of(call, self.unresolved)
                .or_else(|| call.args.first().and_then(|a| self.required_by(&a.expr))),
            Expr::Ident(Ident { sym, .. }) => self.required.get(sym.as_str()).cloned(),
            Expr::Paren(p) => self.required_by(&p.expr),
            _ => None,
        }
    }

    fn object(&mut self, object: &ObjectLit) {
        for prop in &object.props {
            match prop {
                PropOrSpread::Spread(spread) => {
                    if let Some(s) = self.required_by(&spread.expr) {
                        self.found.reexports.push(s);
                    }
                }
                PropOrSpread::Prop(prop) => {
                    let key = match &**prop {
                        Prop::Shorthand(i) => Some(i.sym.to_string()),
                        Prop::KeyValue(kv) => key_name(&kv.key),
                        Prop::Method(m) => key_name(&m.key),
                        Prop::Getter(g) => key_name(&g.key),
                        _ => None,
                    };
                    self.found.names.extend(key);
                }
            }
        }
    }
}

fn key_name(key: &PropName) -> Option<String> {
    match key {
        PropName::Ident(i) => Some(i.sym.to_string()),
        PropName::Str(s) => s.value.as_str().map(str::to_string),
        _ => None,
    }
}

/// The name of the function a call calls (`f(…)`, `tslib.f(…)`).
fn callee_name(call: &CallExpr) -> Option<String> {
    match &call.callee {
        Callee::Expr(e) => match &**e {
            Expr::Ident(i) => Some(i.sym.to_string()),
            Expr::Member(m) => prop_name(&m.prop),
            _ => None,
        },
        _ => None,
    }
}

impl Visit for ExportScan {
    fn visit_var_declarator(&mut self, d: &VarDeclarator) {
        if let (Some(name), Some(init)) = (d.name.as_ident(), &d.init)
            && let Some(specifier) = self.required_by(init)
        {
            self.required.insert(name.sym.to_string(), specifier);
        }
        d.visit_children_with(self);
    }

    fn visit_assign_expr(&mut self, a: &AssignExpr) {
        if let AssignTarget::Simple(SimpleAssignTarget::Member(MemberExpr { obj, prop, .. })) =
            &a.left
        {
            if is_exports(obj, self.unresolved) {
                self.found.names.extend(prop_name(prop));
            } else if is_global(obj, "module", self.unresolved)
                && prop_name(prop).as_deref() == Some("exports")
            {
                match &*a.right {
                    Expr::Object(object) => self.object(object),
                    right => {
                        if let Some(s) = self.required_by(right) {
                            self.found.reexports.push(s);
                        }
                    }
                }
            }
        }
        a.visit_children_with(self);
    }

    fn visit_call_expr(&mut self, call: &CallExpr) {
        let name = callee_name(call);
        match name.as_deref() {
            Some("defineProperty")
                if call.args.len() >= 2 && is_exports(&call.args[0].expr, self.unresolved) =>
            {
                self.found.names.extend(string_of(&call.args[1].expr));
            }
            Some("__exportStar" | "__export" | "_exportStar" | "_export_star" | "__reExport") => {
                let reexported = call.args.iter().find_map(|a| self.required_by(&a.expr));
                self.found.reexports.extend(reexported);
            }
            Some("forEach") => {
                // Babel's `Object.keys(_x).forEach(function (key) { … exports[key] = _x[key] … })`.
                if let Callee::Expr(e) = &call.callee
                    && let Expr::Member(m) = &**e
                    && let Expr::Call(keys) = &*m.obj
                    && callee_name(keys).as_deref() == Some("keys")
                    && let Some(arg) = keys.args.first()
                    && let Some(s) = self.required_by(&arg.expr)
                {
                    self.found.reexports.push(s);
                }
            }
            _ => {}
        }
        call.visit_children_with(self);
    }
}

/// The globals among `names` that `node` uses.
pub fn globals_used<N: VisitWith<Globals>>(
    node: &N,
    unresolved: SyntaxContext,
    names: &[&'static str],
) -> BTreeSet<&'static str> {
    let mut visitor = Globals {
        unresolved,
        names: names.to_vec(),
        found: BTreeSet::new(),
    };
    node.visit_with(&mut visitor);
    visitor.found
}

pub struct Globals {
    unresolved: SyntaxContext,
    names: Vec<&'static str>,
    found: BTreeSet<&'static str>,
}

impl Visit for Globals {
    fn visit_ident(&mut self, i: &Ident) {
        if i.ctxt == self.unresolved
            && let Some(name) = self.names.iter().find(|n| i.sym == **n)
        {
            self.found.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use swc_core::common::{FileName, GLOBALS, Globals, Mark, SourceMap, sync::Lrc};
    use swc_core::ecma::ast::{EsVersion, Program};
    use swc_core::ecma::parser::{EsSyntax, Parser, StringInput, Syntax, lexer::Lexer};
    use swc_core::ecma::transforms::base::resolver;

    use super::*;

    /// `source` parsed as a script, with what `exports` and `requires` find.
    fn scanned(source: &str) -> (Exports, Vec<Require>) {
        GLOBALS.set(&Globals::new(), || {
            let cm: Lrc<SourceMap> = Default::default();
            let file = cm.new_source_file(FileName::Anon.into(), source.to_string());
            let syntax = Syntax::Es(EsSyntax {
                allow_return_outside_function: true,
                ..Default::default()
            });
            let lexer = Lexer::new(syntax, EsVersion::EsNext, StringInput::from(&*file), None);
            let mut program = Program::Script(Parser::new_from(lexer).parse_script().unwrap());
            let unresolved = Mark::new();
            program.mutate(&mut resolver(unresolved, Mark::new(), false));
            let ctxt = SyntaxContext::empty().apply_mark(unresolved);
            (exports(&program, ctxt), requires(&program, ctxt))
        })
    }

    fn names(source: &str) -> Vec<String> {
        scanned(source).0.names.into_iter().collect()
    }

    #[test]
    fn names_are_found_in_the_forms_compilers_write() {
        assert_eq!(
            names("exports.a = 1; module.exports.b = 2; exports['c-d'] = 3;"),
            ["a", "b", "c-d"]
        );
        assert_eq!(
            names(
                "Object.defineProperty(exports, '__esModule', { value: true }); Object.defineProperty(exports, 'x', { get: () => 1 });"
            ),
            ["__esModule", "x"]
        );
        assert_eq!(
            names("module.exports = { a, b: 1, 'c': 2, d() {}, get e() { return 1 } };"),
            ["a", "b", "c", "d", "e"]
        );
        // esbuild's hint for Node, dead code that says what the module exports.
        assert_eq!(
            names("0 && (module.exports = { format, parse });"),
            ["format", "parse"]
        );
        // A local `exports` is not the module's.
        assert!(names("function f(exports) { exports.x = 1 }").is_empty());
    }

    #[test]
    fn reexports_are_found_through_helpers() {
        let reexports = |s: &str| scanned(s).0.reexports;
        assert_eq!(
            reexports("module.exports = require('./cjs/react.production.js');"),
            ["./cjs/react.production.js"]
        );
        assert_eq!(
            reexports(
                "__exportStar(require('./a'), exports); tslib.__exportStar(require('./b'), exports);"
            ),
            ["./a", "./b"]
        );
        assert_eq!(
            reexports(
                "var _x = _interopRequireWildcard(require('./x')); Object.keys(_x).forEach(function (key) { exports[key] = _x[key]; });"
            ),
            ["./x"]
        );
        assert_eq!(
            reexports("module.exports = { ...require('./y'), z: 1 };"),
            ["./y"]
        );
    }

    #[test]
    fn a_require_under_a_condition_is_guarded() {
        let (_, found) = scanned(
            "const a = require('a'); try { require('b') } catch {} if (x) require('c'); \
             function f() { require('d') } const e = x && require('e'); require(name);",
        );
        let seen: Vec<(&str, bool)> = found
            .iter()
            .map(|r| (r.specifier.as_str(), r.guarded))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", false),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true)
            ]
        );
    }
}
