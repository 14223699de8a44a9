//! One build, not three: `cargo build --release -p openseek` (what `cargo run --release` builds),
//! `-p openseek-train` and `--workspace` (the README's build) must give every shared dependency the
//! same features, so that each reuses the others' artifacts instead of compiling DataFusion or Candle's
//! dependencies again (half an hour each on 2 cores). The workspace-hack crate (`cargo hakari`) unifies
//! them; this test fails when a dependency change breaks that, naming the crate and both feature sets.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package (name and version) → the feature sets cargo resolves for it, for one package selection.
fn features(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-e",
            "normal,build",
            "-f",
            "{p} {f}",
            "--prefix",
            "none",
        ])
        .args(selection)
        .current_dir(openseek_testkit::workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {selection:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "name vX.Y.Z (path)? features (*)?"
        let line = line.trim_end().trim_end_matches("(*)").trim_end();
        let mut parts = line.splitn(3, ' ');
        let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        let mut rest = parts.next().unwrap_or("").trim().to_string();
        if rest.starts_with('(') {
            rest = rest[rest.find(')').map_or(0, |i| i + 1)..]
                .trim()
                .to_string();
        }
        let rest = rest.replace("(proc-macro)", "").trim().to_string();
        map.entry(format!("{name} {version}"))
            .or_default()
            .insert(rest);
    }
    map
}

#[test]
fn every_build_resolves_the_same_features() {
    let workspace = features(&["--workspace"]);
    assert!(
        workspace.keys().any(|k| k.starts_with("datafusion v")),
        "cargo tree listed no DataFusion: {workspace:?}"
    );
    let mut differ = Vec::new();
    for package in ["openseek", "openseek-train"] {
        for (crate_, sets) in features(&["-p", package]) {
            if workspace.get(&crate_) != Some(&sets) {
                differ.push(format!(
                    "{crate_}: {sets:?} in `-p {package}`, {:?} in `--workspace`",
                    workspace.get(&crate_)
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "builds that would compile dependencies again (run `cargo hakari generate`, or add the crate \
         by hand at the end of workspace-hack/Cargo.toml):\n{}",
        differ.join("\n")
    );
}
