//! Keeps swc's folding of TypeScript constants linear in the source.
//!
//! swc's TypeScript pass computes the value of every `const` without a
//! type annotation and of every enum member (TypeScript inlines constant
//! ones), and on the way it clones each binary operation's whole subtree
//! (`ts_enum::EnumValueComputer::compute_bin`, swc_core 83): for a chain of
//! n operators, n²/2 nodes, all alive at its deepest point. `x0 + x1 + … +
//! x2999` took 512 MiB of the component's memory and its request failed;
//! 2,000 terms took 0.5 s natively (the hostile probe found it with
//! `minify`, but any TypeScript source does it).
//!
//! So, before that pass: a `const`'s initializer of more than
//! `MAX_FOLDED_OPERATORS` operators is marked `as any`, which the pass
//! takes as "not a constant" at once (as `tsc` does for any assertion in a
//! `const`'s initializer) and then strips, so the output is the same; such
//! a `const` is not inlined into an enum, which no real program asks of
//! one so long. An enum member's initializer that long is refused, at its
//! place: marking it would change what the enum holds.

use swc_core::common::util::take::Take;
use swc_core::common::{BytePos, DUMMY_SP, Spanned};
use swc_core::ecma::ast::{
    BinExpr, BindingIdent, Expr, Module, Pat, TsAsExpr, TsEnumMember, TsKeywordType,
    TsKeywordTypeKind, TsType, VarDecl, VarDeclKind,
};
use swc_core::ecma::visit::{Visit, VisitMut, VisitMutWith, VisitWith};

/// The most binary operators an initializer the TypeScript pass folds may
/// hold: 256 costs it about 33,000 cloned nodes.
pub const MAX_FOLDED_OPERATORS: usize = 256;

/// Marks long `const` initializers of `module` (see the module's doc);
/// `Err` with where the first enum member too long to fold starts.
pub fn limit(module: &mut Module) -> Result<(), BytePos> {
    let mut marker = Marker { too_long: None };
    module.visit_mut_with(&mut marker);
    match marker.too_long {
        Some(at) => Err(at),
        None => Ok(()),
    }
}

struct Marker {
    too_long: Option<BytePos>,
}

impl VisitMut for Marker {
    fn visit_mut_var_decl(&mut self, node: &mut VarDecl) {
        node.visit_mut_children_with(self);
        if node.kind != VarDeclKind::Const {
            return;
        }
        for decl in &mut node.decls {
            let (Pat::Ident(BindingIdent { type_ann: None, .. }), Some(init)) =
                (&decl.name, &mut decl.init)
            else {
                continue;
            };
            if operators(init) > MAX_FOLDED_OPERATORS {
                let span = init.span();
                let expr = init.take();
                **init = Expr::TsAs(TsAsExpr {
                    span,
                    expr,
                    type_ann: Box::new(TsType::TsKeywordType(TsKeywordType {
                        span: DUMMY_SP,
                        kind: TsKeywordTypeKind::TsAnyKeyword,
                    })),
                });
            }
        }
    }

    fn visit_mut_ts_enum_member(&mut self, node: &mut TsEnumMember) {
        if let Some(init) = &node.init
            && self.too_long.is_none()
            && operators(init) > MAX_FOLDED_OPERATORS
        {
            self.too_long = Some(init.span().lo);
        }
    }
}

/// The binary operators in `expr`.
fn operators(expr: &Expr) -> usize {
    struct Count(usize);
    impl Visit for Count {
        fn visit_bin_expr(&mut self, node: &BinExpr) {
            self.0 += 1;
            node.visit_children_with(self);
        }
    }
    let mut count = Count(0);
    expr.visit_with(&mut count);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use swc_core::common::{FileName, SourceMap, sync::Lrc};
    use swc_core::ecma::parser::{Syntax, TsSyntax, parse_file_as_module};

    fn module(source: &str) -> Module {
        let cm: Lrc<SourceMap> = Default::default();
        let file = cm.new_source_file(FileName::Anon.into(), source.to_string());
        let syntax = Syntax::Typescript(TsSyntax::default());
        parse_file_as_module(&file, syntax, Default::default(), None, &mut vec![]).unwrap()
    }

    fn chain(n: usize) -> String {
        (0..=n)
            .map(|i| format!("x{i}"))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Whether the first statement's first declarator was marked.
    fn marked(module: &Module) -> bool {
        let text = format!("{module:?}");
        text.contains("TsAnyKeyword")
    }

    #[test]
    fn only_long_constant_initializers_are_marked() {
        let mut long = module(&format!("const y = {};", chain(MAX_FOLDED_OPERATORS + 1)));
        limit(&mut long).unwrap();
        assert!(marked(&long));
        for unmarked in [
            format!("const y = {};", chain(MAX_FOLDED_OPERATORS)),
            format!("let y = {};", chain(1000)),
            format!("const y: number = {};", chain(1000)),
            format!("const [y] = [{}];", chain(1000)),
        ] {
            let mut m = module(&unmarked);
            limit(&mut m).unwrap();
            assert!(!marked(&m), "{}", &unmarked[..20]);
        }
        // Nested in a function, too.
        let mut nested = module(&format!("function f() {{ const y = {}; }}", chain(300)));
        limit(&mut nested).unwrap();
        assert!(marked(&nested));
        let mut member = module(&format!("enum E {{ A = 1, B = {} }}", chain(300)));
        assert!(limit(&mut member).is_err());
        let mut short = module(&format!("enum E {{ A = {} }}", chain(10)));
        assert!(limit(&mut short).is_ok());
    }
}
