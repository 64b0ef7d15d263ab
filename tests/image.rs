//! The container image (issue 23 item 1): built by `scripts/build-image.sh` without a
//! registry (umoci, from an empty image), compared with the Dockerfile's, unpacked and its
//! entrypoint started in its own root file system as user 65532 (`unshare` + `chroot`:
//! `podman run` cannot run containers on these machines, see the README), where it
//! answers `--version`, prints the CRD of `crds/`, and `run` reaches Ready on the real
//! control plane under the chart's ServiceAccount.
//!
//! Needs root (chroot, umoci's unpack); the test command runs as root. The binary in the
//! image is the one cargo built for this run (a debug build: the release build is what
//! `build-image.sh` makes by default, and would add minutes to every CI run).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::*;
use common::entra::EntraApp;
use common::operator_process::{OperatorProcess, bin};
use serde_json::{Value, json};

struct Image {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    root: PathBuf,
    archive_kib: u64,
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the image with the script and unpacks it with umoci.
fn build() -> Image {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let said = run(Command::new("bash")
        .args(["scripts/build-image.sh", "--binary", &bin()])
        .arg(&archive));
    eprintln!("{said}");
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&archive));
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", layout.display(), version()))
        .arg(&bundle));
    let archive_kib = std::fs::metadata(&archive).unwrap().len() / 1024;
    Image {
        root: bundle.join("rootfs"),
        layout,
        _dir: dir,
        archive_kib,
    }
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let text = std::fs::read_to_string(layout.join("blobs/sha256").join(hex)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The image's OCI config (`config` of its config blob).
fn config(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(layout, index["manifests"][0]["digest"].as_str().unwrap());
    blob(layout, manifest["config"]["digest"].as_str().unwrap())["config"].clone()
}

/// What the Dockerfile's final stage declares: USER, ENTRYPOINT, CMD, EXPOSE, the
/// LABELs (with `${VERSION}` the crate's version) and where the binary is copied.
fn dockerfile() -> (Value, PathBuf) {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    let last = text.rsplit("\nFROM ").next().unwrap().replace("\\\n", " ");
    let line = |k: &str| {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no {k} in the Dockerfile"))
            .trim()
            .to_owned()
    };
    let mut labels = BTreeMap::new();
    let label_line = line("LABEL");
    for part in label_line.split("\" ") {
        let (k, v) = part.trim().split_once("=\"").unwrap();
        let v = v.trim_end_matches('"').replace("${VERSION}", version());
        labels.insert(k.to_owned(), v);
    }
    let copy = line("COPY");
    let dest = PathBuf::from(copy.split_whitespace().last().unwrap());
    let expected = json!({
        "User": line("USER"),
        "Entrypoint": serde_json::from_str::<Value>(&line("ENTRYPOINT")).unwrap(),
        "Cmd": serde_json::from_str::<Value>(&line("CMD")).unwrap(),
        "ExposedPorts": {format!("{}/tcp", line("EXPOSE")): {}},
        "Labels": labels,
    });
    (expected, dest)
}

/// Every file and directory of the root file system, relative.
fn tree(root: &Path) -> Vec<String> {
    let out = run(Command::new("find").arg(".").current_dir(root));
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| *l != ".")
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    v.sort();
    v
}

/// The entrypoint with `args`, in the image's root, as user 65532.
fn entrypoint(root: &Path, args: &[&str]) -> String {
    run(Command::new("unshare")
        .args([
            "--ipc",
            "--uts",
            "--mount",
            "chroot",
            "--userspec=65532:65532",
        ])
        .arg(root)
        .arg("/nocobase-mail-operator")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

#[test]
fn the_image_has_the_dockerfiles_layout_and_nothing_else() {
    let image = build();
    let cfg = config(&image.layout);
    let (expected, dest) = dockerfile();
    for key in ["User", "Entrypoint", "Cmd", "ExposedPorts", "Labels"] {
        assert_eq!(
            cfg[key], expected[key],
            "{key} differs from the Dockerfile's"
        );
    }
    assert_eq!(
        cfg["Entrypoint"][0].as_str(),
        dest.to_str(),
        "the entrypoint is where the Dockerfile copies the binary"
    );
    let files = tree(&image.root);
    let expected_files = [
        "etc",
        "etc/group",
        "etc/passwd",
        "etc/ssl",
        "etc/ssl/certs",
        "etc/ssl/certs/ca-certificates.crt",
        "home",
        "home/nonroot",
        "lib",
        "lib/x86_64-linux-gnu",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "lib/x86_64-linux-gnu/libm.so.6",
        "lib64",
        "lib64/ld-linux-x86-64.so.2",
        "nocobase-mail-operator",
        "tmp",
    ];
    assert_eq!(
        files, expected_files,
        "no shell, no package manager, nothing else"
    );
    let passwd = std::fs::read_to_string(image.root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    eprintln!(
        "image size: {} KiB archive, {} KiB root file system",
        image.archive_kib,
        run(Command::new("du").arg("-sk").arg(&image.root))
            .split_whitespace()
            .next()
            .unwrap()
    );

    // started as the image starts it: --version, and the CRD of crds/
    let said = entrypoint(&image.root, &["--version"]);
    assert_eq!(said.trim(), format!("nocobase-mail-operator {}", version()));
    let crd = entrypoint(&image.root, &["crd"]);
    let file = std::fs::read_to_string("crds/microsoftmailintegrations.yaml").unwrap();
    assert_eq!(crd, file);
}

/// The kubeconfig `path` with its CA file inlined, copied into the image's /tmp.
fn kubeconfig_into(root: &Path, path: &Path) -> String {
    use base64::Engine;
    let mut cfg: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for c in cfg["clusters"].as_array_mut().unwrap() {
        let cluster = c["cluster"].as_object_mut().unwrap();
        if let Some(ca) = cluster.remove("certificate-authority") {
            let pem = std::fs::read(ca.as_str().unwrap()).unwrap();
            let data = base64::engine::general_purpose::STANDARD.encode(pem);
            cluster.insert("certificate-authority-data".into(), json!(data));
        }
    }
    std::fs::write(
        root.join("tmp/kubeconfig"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    "/tmp/kubeconfig".into()
}

#[tokio::test]
async fn the_image_runs_to_ready_on_the_real_control_plane() {
    let Some(env) = Env::new("image").await else {
        return;
    };
    let image = build();
    let app = EntraApp::start(OLD, FAR).await;
    let release = env.release("img", &app, &[]);
    let (args, vars, kubeconfig) = release.launch(&env.client, env.dir.path()).await;
    let inside = kubeconfig_into(&image.root, &kubeconfig);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = env.dir.path().join("image.log");
    let mut op = OperatorProcess::start_in_root(&image.root, &inside, &args, &vars, &log);
    op.wait_ready(60).await;
    env.apply(&user_secret("entra", OLD));
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration("outlook", &app, json!({})));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 60)
        .await;
    // deleted while the operator runs, so that the namespace can go
    env.kube
        .kubectl_ok(&["delete", "mmi", "outlook", "-n", &env.ns, "--timeout=30s"]);
    op.stop();
    let logs = op.logs();
    assert!(warnings(&logs).is_empty(), "warnings:\n{logs}");
    env.cleanup().await;
}
