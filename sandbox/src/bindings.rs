//! Host bindings generated from the `reagent:tool` WIT package.

wasmtime::component::bindgen!({
    path: "../tools/wit",
    world: "plugin",
    exports: { default: async },
});
