//! Compiles the GLSL compute shaders in `shaders/` to SPIR-V with naga (no system tools), into
//! `$OUT_DIR/NAME.spv`. naga's GLSL front end has no `#include`, so `shaders/common.glsl` is
//! prepended to each shader here, after `#version` and the shader's defines.

fn main() {
    // Only the Vulkan layer has shaders.
    #[cfg(feature = "vulkan")]
    shaders::compile();
}

#[cfg(feature = "vulkan")]
mod shaders {
    use std::path::{Path, PathBuf};

    /// (output name, source file, defines)
    const SHADERS: &[(&str, &str, &[&str])] = &[
        ("buffer", "buffer.comp", &[]),
        ("image_packed", "image.comp", &[]),
        ("image_nv12", "image.comp", &["PLANES_NV12"]),
        ("fold", "fold.comp", &[]),
    ];

    pub fn compile() {
        let dir = Path::new("shaders");
        println!("cargo:rerun-if-changed=shaders");
        println!("cargo:rerun-if-changed=build.rs");
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let common = read(&dir.join("common.glsl"));
        for (name, file, defines) in SHADERS {
            let path = dir.join(file);
            let source = format!("#version 450\n{common}\n{}", read(&path));
            let mut options = naga::front::glsl::Options::from(naga::ShaderStage::Compute);
            for d in *defines {
                options.defines.insert((*d).to_owned(), "1".to_owned());
            }
            let module = naga::front::glsl::Frontend::default()
                .parse(&options, &source)
                .unwrap_or_else(|e| fail(&path, &e.emit_to_string(&source)));
            let info = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                // naga maps GLSL barrier() to a barrier that includes subgroup memory semantics,
                // which its validator files under the subgroup capabilities (no SPIR-V capability
                // is emitted for it).
                naga::valid::Capabilities::PUSH_CONSTANT
                    | naga::valid::Capabilities::SUBGROUP
                    | naga::valid::Capabilities::SUBGROUP_BARRIER,
            )
            .validate(&module)
            .unwrap_or_else(|e| fail(&path, &e.emit_to_string(&source)));
            let spv_options = naga::back::spv::Options {
                lang_version: (1, 0),
                flags: naga::back::spv::WriterFlags::empty(),
                ..Default::default()
            };
            let words = naga::back::spv::write_vec(&module, &info, &spv_options, None)
                .unwrap_or_else(|e| fail(&path, &e.to_string()));
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::fs::write(out.join(format!("{name}.spv")), bytes)
                .unwrap_or_else(|e| fail(&path, &e.to_string()));
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| fail(path, &e.to_string()))
    }

    fn fail(path: &Path, why: &str) -> ! {
        panic!("shader {}: {why}", path.display())
    }
}
