//! `--hub` and Hub model ids, without the network: a real HTTP server on the loopback address
//! serves a dataset and a tiny model in the Hub's layout (`/<repo>/resolve/<revision>/<file>`,
//! with the ETag and X-Repo-Commit headers hf-hub needs), `HF_ENDPOINT` points hf-hub at it and
//! `HF_HUB_CACHE` keeps its cache in a temporary folder. What comes through the Hub must equal what
//! comes from the same files on disk.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Serves `files` (URL path → local file) until the test ends; returns the endpoint's URL and the
/// request log (method and path of every request, to check the Hub was asked).
fn serve(files: Vec<(String, PathBuf)>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        for req in server.incoming_requests() {
            seen.lock().unwrap().push(format!("{} {}", req.method(), req.url()));
            let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap();
            let found = files.iter().find(|(p, _)| *p == req.url()).map(|(_, f)| std::fs::read(f).unwrap());
            let _ = match found {
                Some(bytes) => {
                    // The Hub's ETag of an LFS file is its SHA-256 (of a plain file, its git
                    // blob id); hf-hub names its cache blobs by it.
                    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                    let etag = format!("\"{sha}\"");
                    let r = tiny_http::Response::from_data(bytes)
                        .with_header(header("ETag", &etag))
                        .with_header(header("X-Repo-Commit", commit));
                    req.respond(r)
                }
                None => req.respond(
                    tiny_http::Response::from_string("Entry not found")
                        .with_status_code(404)
                        .with_header(header("X-Repo-Commit", commit))
                        .with_header(header("X-Error-Code", "EntryNotFound")),
                ),
            };
        }
    });
    (url, log)
}

/// `thrive` with hf-hub pointed at `endpoint` and its cache in `cache`.
fn thrive_hub(endpoint: &str, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thrive"))
        .args(["--log", "warn"])
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

fn expect_ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn hub_dataset_and_model_come_through_the_hub_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf-cache");
    let data = root().join("pool/tests/fixtures/helpsteer2");
    let model = root().join("sft/tests/fixtures/tiny-gemma2");
    let mut files = vec![
        ("/datasets/acme/helpsteer-mini/resolve/main/train.jsonl.gz".to_string(), data.join("train.jsonl.gz")),
        (
            "/datasets/acme/helpsteer-mini/resolve/main/validation.jsonl.gz".to_string(),
            data.join("validation.jsonl.gz"),
        ),
    ];
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        files.push((format!("/acme/tiny-gemma2/resolve/main/{f}"), model.join(f)));
    }
    let (endpoint, log) = serve(files);
    let tokenizer = model.join("tokenizer.json");

    // The same dataset imported from the Hub and from the folder: the same rows.
    let hub_pool = tmp.path().join("hub-pool");
    let local_pool = tmp.path().join("local-pool");
    let tok = s(&tokenizer);
    expect_ok(thrive_hub(
        &endpoint,
        &cache,
        &["pool", "import", s(&hub_pool), "--hub", "acme/helpsteer-mini", "--tokenizer", tok],
    ));
    ok(&["pool", "import", s(&local_pool), "--helpsteer2", s(&data), "--tokenizer", tok]);
    let rows = |dir: &Path| {
        let pool = thrive_pool::Pool::open(dir).unwrap();
        let mut v = Vec::new();
        for f in &pool.manifest().files {
            for e in pool.read_batch(&f.key).unwrap() {
                v.push((f.key.to_string(), e.example_id, e.prompt, e.response));
            }
        }
        v
    };
    let hub_rows = rows(&hub_pool);
    assert_eq!(hub_rows.len(), 60 + 12);
    assert_eq!(hub_rows, rows(&local_pool));

    // A model given by its Hub id trains to the same adapter as its local directory.
    let train = |model: &str, out: &Path| {
        let args = [
            "sft",
            "--model",
            model,
            "--pool",
            s(&local_pool),
            "--generation",
            "1",
            "--out",
            s(out),
            "--lr",
            "1e-2",
            "--sequences-per-step",
            "8",
            "--max-len",
            "64",
            "--device",
            "cpu",
        ];
        expect_ok(thrive_hub(&endpoint, &cache, &args));
        std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap()
    };
    let from_hub = train("acme/tiny-gemma2", &tmp.path().join("hub-sft"));
    let from_dir = train(s(&model), &tmp.path().join("local-sft"));
    assert!(from_hub == from_dir, "the adapter trained from the Hub id differs");
    let log = log.lock().unwrap().clone();
    for want in [
        "GET /acme/tiny-gemma2/resolve/main/model.safetensors",
        "GET /datasets/acme/helpsteer-mini/resolve/main/train.jsonl.gz",
    ] {
        assert!(log.iter().any(|l| l == want), "{want} was never requested: {log:?}");
    }

    // What the Hub does not have is named.
    let o = thrive_hub(&endpoint, &cache, &["pool", "import", s(&tmp.path().join("p3")), "--hub", "acme/missing"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("acme/missing/train.jsonl.gz") && !err.contains("panicked"), "{err}");
    assert!(!tmp.path().join("p3/manifest.json").exists());
    let o = thrive_hub(
        &endpoint,
        &cache,
        &[
            "sft",
            "--model",
            "acme/nothing",
            "--pool",
            s(&local_pool),
            "--generation",
            "1",
            "--out",
            s(&tmp.path().join("x")),
            "--device",
            "cpu",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("acme/nothing/config.json") && !err.contains("panicked"), "{err}");
}
