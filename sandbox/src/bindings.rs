//! Host bindings generated from the `reagent:tool` WIT package, one module per version the host
//! offers. A component is linked against the newest version it exports.

/// `reagent:tool@0.2.0` (`tools/wit/tool.wit`): `call` gets the call's context.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../tools/wit",
        world: "plugin",
        exports: { default: async },
    });
}

/// `reagent:tool@0.1.0` (`tools/wit/0.1.0/tool.wit`), for components built against it.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../tools/wit/0.1.0",
        world: "plugin",
        exports: { default: async },
    });
}

/// The `tools` interface of each version, as the host calls it.
pub mod exports_of {
    pub use super::v0_1::exports::reagent::tool::tools as v0_1_tools;
    pub use super::v0_2::exports::reagent::tool::tools as v0_2_tools;
}
