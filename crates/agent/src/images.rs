//! The images krust builds itself, because nothing can be pulled from the internet here:
//! a pause image (a tiny static C program) and busybox (Debian's `busybox-static` with a link
//! per applet), written as OCI image layout archives and imported through containerd's `ctr`.
//!
//! An archive holds `oci-layout`, `index.json` (one manifest, named through the
//! `io.containerd.image.name` annotation, which `ctr images import` uses as the image name) and
//! `blobs/sha256/`: the manifest, the image config and one gzip layer. Layers are
//! reproducible: uid/gid 0 and mtime 0 everywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;

use crate::runtime::Runtime;

/// The sandbox ("pause") image containerd's CRI plugin is configured with.
pub const PAUSE_IMAGE: &str = "krust.local/pause:3.9";
/// busybox, under the name everyday manifests use (`busybox`, `busybox:latest`).
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// Images the agent imports itself: present from setup on, never pulled.
pub const PRELOADED: [&str; 2] = [PAUSE_IMAGE, BUSYBOX_IMAGE];

/// Where Debian's `busybox-static` puts the binary.
const BUSYBOX_BINARY: &str = "/bin/busybox";
/// CRI's containerd namespace.
const CRI_NAMESPACE: &str = "k8s.io";

/// The pause program: exits 0 on SIGINT/SIGTERM, reaps children, sleeps otherwise.
const PAUSE_C: &str = r#"#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction act = {0};
    act.sa_handler = on_stop;
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    act.sa_handler = on_child;
    act.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &act, NULL);
    for (;;) {
        pause();
    }
}
"#;

/// What can go wrong building or importing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("asking the runtime about image {image}")]
    Runtime {
        image: String,
        #[source]
        source: Box<crate::runtime::RuntimeError>,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One entry of an image's root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// What an image is: its root filesystem and the config a container starts from.
#[derive(Clone, Debug)]
pub struct ImageDef {
    /// Full reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub rootfs: Vec<Entry>,
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h
}

fn tar_error(source: std::io::Error) -> ImageError {
    ImageError::Io {
        what: "writing an image archive in memory",
        path: PathBuf::from("-"),
        source,
    }
}

/// The uncompressed layer tar of `entries`.
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir { path, mode } => {
                let mut h = header(0, *mode, tar::EntryType::Directory);
                b.append_data(&mut h, format!("{}/", path.trim_end_matches('/')), &[][..])
                    .map_err(tar_error)?;
            }
            Entry::File { path, mode, data } => {
                let mut h = header(data.len() as u64, *mode, tar::EntryType::Regular);
                b.append_data(&mut h, path, &data[..]).map_err(tar_error)?;
            }
            Entry::Symlink { path, target } => {
                let mut h = header(0, 0o777, tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).map_err(tar_error)?;
            }
        }
    }
    b.into_inner().map_err(tar_error)
}

/// The OCI layout archive (an uncompressed tar) of `image`.
pub fn oci_archive(image: &ImageDef) -> Result<Vec<u8>, ImageError> {
    let layer = layer_tar(&image.rootfs)?;
    let diff_id = sha256_hex(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer).map_err(tar_error)?;
    let layer_gz = gz.finish().map_err(tar_error)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": if image.entrypoint.is_empty() { serde_json::Value::Null } else { json!(image.entrypoint) },
            "Cmd": if image.cmd.is_empty() { serde_json::Value::Null } else { json!(image.cmd) },
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": "krust", "comment": "built by the krust node agent"}],
    });
    let config = serde_json::to_vec(&config).map_err(|e| tar_error(e.into()))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha256_hex(&layer_gz)),
            "size": layer_gz.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| tar_error(e.into()))?;
    let tag = image
        .name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".to_string());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index).map_err(|e| tar_error(e.into()))?;

    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| -> Result<(), ImageError> {
        let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
        out.append_data(&mut h, path, data).map_err(tar_error)
    };
    add(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add("index.json".to_string(), &index)?;
    for blob in [&manifest, &config, &layer_gz] {
        add(format!("blobs/sha256/{}", sha256_hex(blob)), blob)?;
    }
    out.into_inner().map_err(tar_error)
}

/// The pause image, compiled with `gcc -static` in `work_dir`.
pub fn pause_image(work_dir: &Path) -> Result<ImageDef, ImageError> {
    std::fs::create_dir_all(work_dir).map_err(io_err("creating", work_dir))?;
    let src = work_dir.join("pause.c");
    let bin = work_dir.join("pause");
    std::fs::write(&src, PAUSE_C).map_err(io_err("writing", &src))?;
    let out = std::process::Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&bin)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running gcc for", &src))?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command: "gcc -static pause.c".to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let data = std::fs::read(&bin).map_err(io_err("reading", &bin))?;
    Ok(ImageDef {
        name: PAUSE_IMAGE.to_string(),
        entrypoint: vec!["/pause".to_string()],
        cmd: Vec::new(),
        rootfs: vec![Entry::File {
            path: "pause".to_string(),
            mode: 0o755,
            data,
        }],
    })
}

/// Directories every busybox rootfs has, with their modes.
const BUSYBOX_DIRS: [(&str, u32); 12] = [
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("root", 0o700),
    ("var", 0o755),
];

/// The busybox image from the machine's static busybox.
pub fn busybox_image() -> Result<ImageDef, ImageError> {
    let binary = Path::new(BUSYBOX_BINARY);
    let data = std::fs::read(binary).map_err(io_err("reading", binary))?;
    let out = std::process::Command::new(binary)
        .arg("--list-full")
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running", binary))?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command: format!("{BUSYBOX_BINARY} --list-full"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let mut rootfs: Vec<Entry> = BUSYBOX_DIRS
        .iter()
        .map(|(p, m)| Entry::Dir {
            path: p.to_string(),
            mode: *m,
        })
        .collect();
    rootfs.push(Entry::File {
        path: "bin/busybox".to_string(),
        mode: 0o755,
        data,
    });
    rootfs.push(Entry::File {
        path: "etc/passwd".to_string(),
        mode: 0o644,
        data:
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
    });
    rootfs.push(Entry::File {
        path: "etc/group".to_string(),
        mode: 0o644,
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    });
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut links: Vec<&str> = listing
        .lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
        .filter(|l| {
            BUSYBOX_DIRS
                .iter()
                .any(|(d, _)| l.rsplit_once('/').is_some_and(|(p, _)| p == *d))
        })
        .collect();
    links.sort_unstable();
    links.dedup();
    rootfs.extend(links.into_iter().map(|l| Entry::Symlink {
        path: l.to_string(),
        target: "/bin/busybox".to_string(),
    }));
    Ok(ImageDef {
        name: BUSYBOX_IMAGE.to_string(),
        entrypoint: Vec::new(),
        cmd: vec!["sh".to_string()],
        rootfs,
    })
}

/// Imports an OCI archive into containerd's CRI namespace through `ctr`.
pub async fn import(socket: &Path, archive: &Path) -> Result<(), ImageError> {
    let out = tokio::process::Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", CRI_NAMESPACE, "images", "import"])
        .arg(archive)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err("running ctr images import", archive))?;
    if !out.status.success() {
        return Err(ImageError::Command {
            command: format!("ctr images import {}", archive.display()),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Builds and imports the pause and busybox images if the runtime does not have them.
/// `work_dir` keeps the archives (rebuilt each time they are needed).
pub async fn ensure_images(
    rt: &dyn Runtime,
    socket: &Path,
    work_dir: &Path,
) -> Result<(), ImageError> {
    for name in PRELOADED {
        let present = rt
            .image_status(name)
            .await
            .map_err(|e| ImageError::Runtime {
                image: name.to_string(),
                source: Box::new(e),
            })?
            .is_some();
        if present {
            continue;
        }
        let started = std::time::Instant::now();
        let def = if name == PAUSE_IMAGE {
            pause_image(work_dir)?
        } else {
            busybox_image()?
        };
        let archive = oci_archive(&def)?;
        let file_name = name.replace(['/', ':'], "_") + ".tar";
        let path = work_dir.join(file_name);
        std::fs::create_dir_all(work_dir).map_err(io_err("creating", work_dir))?;
        std::fs::write(&path, &archive).map_err(io_err("writing", &path))?;
        import(socket, &path).await?;
        tracing::info!(image = name, elapsed = ?started.elapsed(), "image built and imported");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout() {
        let def = ImageDef {
            name: "krust.local/test:v1".to_string(),
            entrypoint: vec!["/hello".to_string()],
            cmd: Vec::new(),
            rootfs: vec![
                Entry::Dir {
                    path: "bin".to_string(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "hello".to_string(),
                    mode: 0o755,
                    data: b"#!/bin/sh\n".to_vec(),
                },
                Entry::Symlink {
                    path: "bin/hi".to_string(),
                    target: "/hello".to_string(),
                },
            ],
        };
        let archive = oci_archive(&def).expect("archive");
        // Reproducible.
        assert_eq!(archive, oci_archive(&def).expect("archive"));
        let mut files = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(&archive[..]);
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            files.insert(path, data);
        }
        let index: serde_json::Value =
            serde_json::from_slice(&files["index.json"]).expect("index.json");
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "krust.local/test:v1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "v1");
        let digest = m["digest"].as_str().expect("digest");
        let manifest_bytes = &files[&format!("blobs/sha256/{}", &digest[7..])];
        assert_eq!(format!("sha256:{}", sha256_hex(manifest_bytes)), digest);
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).expect("manifest");
        let config_digest = manifest["config"]["digest"].as_str().expect("config");
        let config: serde_json::Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", &config_digest[7..])])
                .expect("config");
        assert_eq!(config["config"]["Entrypoint"][0], "/hello");
        // The diff id is the digest of the uncompressed layer.
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("layer");
        let gz = &files[&format!("blobs/sha256/{}", &layer_digest[7..])];
        let mut layer = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut layer)
            .expect("gunzip");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer))
        );
        let mut names = Vec::new();
        for e in tar::Archive::new(&layer[..])
            .entries()
            .expect("layer entries")
        {
            let e = e.expect("entry");
            assert_eq!(e.header().mtime().expect("mtime"), 0);
            names.push(e.path().expect("path").to_string_lossy().into_owned());
        }
        assert_eq!(names, ["bin/", "hello", "bin/hi"]);
    }

    #[test]
    fn busybox_has_applets() {
        if !Path::new(BUSYBOX_BINARY).exists() {
            eprintln!("skipping: {BUSYBOX_BINARY} is not installed (busybox-static)");
            return;
        }
        let def = busybox_image().expect("busybox image");
        let has = |p: &str| {
            def.rootfs.iter().any(|e| match e {
                Entry::Symlink { path, .. } | Entry::File { path, .. } => path == p,
                Entry::Dir { .. } => false,
            })
        };
        assert!(has("bin/busybox") && has("bin/sh") && has("bin/sleep") && has("etc/passwd"));
    }
}
