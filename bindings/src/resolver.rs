//! `import` resolution: bare names come from the embedded stdlib (`import "recipe" as recipe;`),
//! anything else is a `.rhai` file next to the importing script or in the current directory,
//! read through the sandbox. Modules are compiled once per engine; a module that imports itself,
//! directly or through others, is an `import cycle` error rather than a stack overflow.

use std::cell::RefCell;
use std::collections::HashMap;

use medbridge_runtime::sandbox::Sandbox;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

type SharedModule = Shared<Module>;

/// The stdlib modules embedded at build time: (name, source).
pub const STDLIB: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/stdlib_modules.rs"));

/// Source of a stdlib module by name.
pub fn stdlib_source(name: &str) -> Option<&'static str> {
    STDLIB.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

pub struct Resolver {
    sandbox: Sandbox,
    cache: RefCell<HashMap<String, SharedModule>>,
    /// (source name, import path) of the modules being evaluated, outermost first.
    resolving: RefCell<Vec<(String, String)>>,
}

impl Resolver {
    pub fn new(sandbox: Sandbox) -> Self {
        Resolver { sandbox, cache: RefCell::new(HashMap::new()), resolving: RefCell::new(Vec::new()) }
    }

    /// (source name, text) of an import path.
    fn locate(&self, path: &str, pos: Position) -> Result<(String, String), Box<EvalAltResult>> {
        if let Some(text) = stdlib_source(path) {
            return Ok((format!("stdlib/{path}.rhai"), text.to_string()));
        }
        let file = if path.ends_with(".rhai") { path.to_string() } else { format!("{path}.rhai") };
        let located = self.sandbox.locate_read(&file).map_err(|e| runtime_at(e.to_string(), pos))?;
        let Some(real) = located else {
            let names: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
            return Err(runtime_at(
                format!(
                    "unknown import `{path}`: not a stdlib module ({}) and no `{file}` next to the script or in the current directory",
                    names.join(", ")
                ),
                pos,
            ));
        };
        let text = std::fs::read_to_string(&real)
            .map_err(|e| runtime_at(format!("{}: {e}", real.display()), pos))?;
        Ok((real.display().to_string(), text))
    }
}

fn runtime_at(message: String, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), pos))
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        if let Some(m) = self.cache.borrow().get(path) {
            return Ok(m.clone());
        }
        let (name, text) = self.locate(path, pos)?;
        let resolving = self.resolving.borrow();
        if let Some(start) = resolving.iter().position(|(n, _)| *n == name) {
            let mut chain: Vec<&str> = resolving[start..].iter().map(|(_, p)| p.as_str()).collect();
            chain.push(path);
            return Err(runtime_at(format!("import cycle: {}", chain.join(" → ")), pos));
        }
        drop(resolving);
        let in_module = |e: Box<EvalAltResult>| Box::new(EvalAltResult::ErrorInModule(name.clone(), e, pos));
        let mut ast = engine.compile(crate::script::without_bom(&text)).map_err(|e| in_module(e.into()))?;
        ast.set_source(name.as_str());
        self.resolving.borrow_mut().push((name.clone(), path.to_string()));
        let evaluated = Module::eval_ast_as_new(Scope::new(), &ast, engine);
        self.resolving.borrow_mut().pop();
        let module: SharedModule = evaluated.map_err(in_module)?.into();
        self.cache.borrow_mut().insert(path.to_string(), module.clone());
        Ok(module)
    }
}
