//! Sets `BYPASS_GIT_REV` for the crate: the short commit hash of the checkout this is built
//! from, with `-dirty` when the tree has uncommitted changes, or `unknown` outside a git
//! checkout of this repository (a packaged crate, a tarball, or git missing). `bypass
//! --version` prints it and the bench JSON records it (`option_env!("BYPASS_GIT_REV")`).
//!
//! The script reruns when HEAD moves (a commit, a checkout) or when a file under cli/src/ or
//! the library's src/ changes (which rebuilds the binary anyway), not on every build.
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../src");
    // This crate is the folder cli/ of the repository; the checkout is its parent.
    let rev = dir
        .parent()
        .and_then(revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BYPASS_GIT_REV={rev}");
}

fn revision(root: &Path) -> Option<String> {
    // Only this repository's own checkout counts, not a repository the crate sits inside.
    let top = PathBuf::from(git(root, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    // HEAD lives in the (per-worktree) git dir; the branch it points to and packed-refs in
    // the common dir.
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    let git_dir = abs(git(root, &["rev-parse", "--git-dir"])?);
    let common = git(root, &["rev-parse", "--git-common-dir"]).map_or(git_dir.clone(), abs);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(r) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        let loose = common.join(&r);
        if loose.exists() {
            println!("cargo:rerun-if-changed={}", loose.display());
        }
    }
    let packed = common.join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
    let hash = git(root, &["rev-parse", "--short", "HEAD"])?;
    // Tracked files that differ from HEAD (untracked files do not make a build dirty).
    // (`--no-optional-locks`: a build never takes git's index lock.)
    let dirty = git(
        root,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
