//! The pool end to end on real Parquet files: import (jsonl, jsonl.gz, Parquet with a real
//! tokenizer), the training-set views of every workflow, lineage, immutability, the writer lock,
//! corrupt input, and a writer killed mid-write.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use thrive_core::{SubsampleSize, Workflow};
use thrive_pool::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn counter() -> TokenCounter {
    TokenCounter::from_file(&fixtures().join("tokenizer.json")).unwrap()
}

fn provenance(call_seed: u64, sample_index: u64) -> Provenance {
    Provenance {
        base_model: "tiny-gemma2".into(),
        adapter_path: Some("checkpoints/x/gen-1/adapter".into()),
        adapter_sha256: Some("ab".repeat(32)),
        temperature: 1.0,
        top_p: 1.0,
        top_k: None,
        max_new_tokens: 64,
        call_seed,
        sample_index,
        filter: "accepted".into(),
    }
}

fn synthetic(workflow: Workflow, chain: u64, generation: u32, n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let words = 1 + (i * 7 + generation as usize * 3 + chain as usize) % 40;
            let response = vec!["word"; words].join(" ");
            Example::synthetic(
                workflow.name(),
                chain,
                generation,
                format!("question {i} of generation {generation}"),
                response,
                provenance(generation as u64, i as u64),
            )
        })
        .collect()
}

/// A pool with real train (60) and validation (12) rows and synthetic batches for every
/// workflow, chains 0 and 1, generations 1..=3 (50 rows each), all with token counts.
fn build_pool(dir: &Path) -> Pool {
    let counter = counter();
    let mut w = PoolWriter::open(dir).unwrap();
    let hs = HubSource::Local(fixtures().join("helpsteer2"));
    for split in ["train", "validation"] {
        let mut rows =
            import_file(&hs.split_file(split).unwrap(), &ColumnMapping::default(), "helpsteer2", split).unwrap();
        counter.annotate(&mut rows).unwrap();
        w.write_batch(&BatchKey::real(split), &rows).unwrap();
    }
    for wf in Workflow::ALL {
        for chain in 0..2 {
            for g in 1..=3 {
                let mut rows = synthetic(wf, chain, g, 50);
                counter.annotate(&mut rows).unwrap();
                w.write_batch(&BatchKey::synthetic(wf, chain, g), &rows).unwrap();
            }
        }
    }
    w.pool().clone()
}

fn ids(view: ViewReader<'_>) -> Vec<String> {
    view.examples().unwrap().into_iter().map(|e| e.example_id).collect()
}

#[test]
fn import_all_formats_alike_with_extras_and_token_counts() {
    let dir = fixtures().join("helpsteer2");
    let map = ColumnMapping::default();
    let a = import_file(&dir.join("train.jsonl"), &map, "helpsteer2", "train").unwrap();
    let b = import_file(&dir.join("train.jsonl.gz"), &map, "helpsteer2", "train").unwrap();
    let c = import_file(&dir.join("train.parquet"), &map, "helpsteer2", "train").unwrap();
    assert_eq!(a.len(), 60);
    assert_eq!(a, b);
    // Same text and ids from Parquet; the attribute scores are kept (as numbers) in `extra`.
    for (x, y) in a.iter().zip(&c) {
        assert_eq!((&x.example_id, &x.prompt, &x.response), (&y.example_id, &y.prompt, &y.response));
        let (Origin::Real { extra: ex, .. }, Origin::Real { extra: ey, .. }) = (&x.origin, &y.origin) else { panic!() };
        let (ex, ey): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(ex.as_ref().unwrap()).unwrap(), serde_json::from_str(ey.as_ref().unwrap()).unwrap());
        assert_eq!(ex, ey);
        assert!(ex["helpfulness"].is_number() && ex["verbosity"].is_number(), "{ex}");
    }
    // Token counts equal the Python tokenizers reference (BOS from the template, EOS appended).
    let mut rows = a;
    counter().annotate(&mut rows).unwrap();
    let expected: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("token_counts.json")).unwrap()).unwrap();
    assert_eq!(rows.iter().map(|r| r.tokens.unwrap()).collect::<Vec<_>>(), expected);
}

#[test]
fn views_follow_each_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let pool = build_pool(dir.path());
    let real: Vec<String> =
        pool.read_batch(&BatchKey::real("train")).unwrap().into_iter().map(|e| e.example_id).collect();
    let syn = |w: Workflow, c: u64, g: u32| -> Vec<String> {
        pool.read_batch(&BatchKey::synthetic(w, c, g)).unwrap().into_iter().map(|e| e.example_id).collect()
    };
    // Generation 1 trains on the real data in every workflow.
    for w in Workflow::ALL {
        assert_eq!(ids(pool.view(&View::training(w, 0, 1)).unwrap()), real);
    }
    // Replace: the previous generation's synthetic rows only.
    assert_eq!(ids(pool.view(&View::training(Workflow::Replace, 1, 3)).unwrap()), syn(Workflow::Replace, 1, 2));
    // Accumulate: real plus every synthetic batch so far, in order.
    let acc = ids(pool.view(&View::training(Workflow::Accumulate, 0, 3)).unwrap());
    let expected: Vec<String> =
        real.iter().cloned().chain(syn(Workflow::Accumulate, 0, 1)).chain(syn(Workflow::Accumulate, 0, 2)).collect();
    assert_eq!(acc, expected);
    // Accumulate-Subsample: int(total / t) distinct rows of everything so far, deterministic per chain.
    let total = 60 + 50 + 50;
    let s0 = ids(pool.view(&View::training(Workflow::AccumulateSubsample, 0, 3)).unwrap());
    assert_eq!(s0.len(), total / 3);
    assert_eq!(s0.iter().collect::<HashSet<_>>().len(), s0.len());
    let everything: HashSet<String> = real
        .iter()
        .cloned()
        .chain(syn(Workflow::AccumulateSubsample, 0, 1))
        .chain(syn(Workflow::AccumulateSubsample, 0, 2))
        .collect();
    assert!(s0.iter().all(|id| everything.contains(id)));
    assert_eq!(s0, ids(pool.view(&View::training(Workflow::AccumulateSubsample, 0, 3)).unwrap()));
    assert_ne!(s0, ids(pool.view(&View::training(Workflow::AccumulateSubsample, 1, 3)).unwrap()));
    // It draws from real and synthetic rows alike (real data have no special status).
    assert!(s0.iter().any(|id| real.contains(id)) && s0.iter().any(|id| !real.contains(id)));
    // A fixed size, and a size larger than the pool is an error.
    let view = |size| View::Training {
        workflow: Workflow::AccumulateSubsample,
        chain: 0,
        generation: 3,
        subsample: size,
        filter: None,
    };
    assert_eq!(ids(pool.view(&view(SubsampleSize::Count(60))).unwrap()).len(), 60);
    assert!(pool.view(&view(SubsampleSize::Count(total + 1))).is_err());
    // A missing batch is named.
    let err = pool.view(&View::training(Workflow::Replace, 7, 2)).err().unwrap().to_string();
    assert!(err.contains("chain 7"), "{err}");
}

#[test]
fn length_filter_drops_and_never_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let pool = build_pool(dir.path());
    let limit = LengthFilter { max_tokens: 30 };
    let all = pool.view(&View::training(Workflow::Accumulate, 0, 3)).unwrap().examples().unwrap();
    let kept = pool.view(&View::training(Workflow::Accumulate, 0, 3).with_filter(limit)).unwrap().examples().unwrap();
    let expected: Vec<&Example> = all.iter().filter(|e| e.tokens.unwrap() <= 30).collect();
    assert!(!expected.is_empty() && expected.len() < all.len(), "the fixture must straddle the limit");
    assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
    // The subsample is drawn among the rows that pass.
    let sub =
        pool.view(&View::training(Workflow::AccumulateSubsample, 0, 2).with_filter(limit)).unwrap().examples().unwrap();
    let eligible =
        pool.view(&View::training(Workflow::Accumulate, 0, 2).with_filter(limit)).unwrap().examples().unwrap().len();
    assert_eq!(sub.len(), eligible / 2);
    assert!(sub.iter().all(|e| e.tokens.unwrap() <= 30));
}

#[test]
fn mix_first_rows_or_seeded_choice() {
    let dir = tempfile::tempdir().unwrap();
    let pool = build_pool(dir.path());
    let key = BatchKey::synthetic(Workflow::Replace, 0, 1);
    let mix = |pick| View::Mix { num_real: 10, num_synthetic: 20, synthetic: key.clone(), pick, filter: None };
    let first = pool.view(&mix(Pick::First)).unwrap().examples().unwrap();
    let real = pool.read_batch(&BatchKey::real("train")).unwrap();
    let syn = pool.read_batch(&key).unwrap();
    assert_eq!(first[..10], real[..10]);
    assert_eq!(first[10..], syn[..20]);
    let r1 = ids(pool.view(&mix(Pick::Random { seed: 3 })).unwrap());
    let r2 = ids(pool.view(&mix(Pick::Random { seed: 3 })).unwrap());
    let r3 = ids(pool.view(&mix(Pick::Random { seed: 4 })).unwrap());
    assert_eq!(r1.len(), 30);
    assert_eq!(r1, r2);
    assert_ne!(r1, r3);
    let too_many = View::Mix { num_real: 61, num_synthetic: 0, synthetic: key, pick: Pick::First, filter: None };
    assert!(pool.view(&too_many).err().unwrap().to_string().contains("61"));
}

#[test]
fn lineage_traces_a_synthetic_row_to_its_model_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let pool = build_pool(dir.path());
    let target = &pool.read_batch(&BatchKey::synthetic(Workflow::Accumulate, 1, 3)).unwrap()[7];
    let lineage = pool.lineage(&target.example_id).unwrap();
    assert_eq!(&lineage.example, target);
    assert!(lineage.file.ends_with("synthetic/accumulate/chain-1/gen-0003.parquet"));
    assert_eq!(
        lineage.model_trained_on,
        vec![
            BatchKey::real("train"),
            BatchKey::synthetic(Workflow::Accumulate, 1, 1),
            BatchKey::synthetic(Workflow::Accumulate, 1, 2)
        ]
    );
    let Origin::Synthetic { provenance, .. } = &lineage.example.origin else { panic!() };
    assert_eq!((provenance.call_seed, provenance.sample_index), (3, 7));
    assert!(pool.lineage("0123").is_err());
}

#[test]
fn batches_are_immutable_and_writers_share_the_pool_through_a_host_aware_lock() {
    let dir = tempfile::tempdir().unwrap();
    build_pool(dir.path());
    let mut w = PoolWriter::open(dir.path()).unwrap();
    let before = std::fs::read(dir.path().join("real/train.parquet")).unwrap();
    let err = w.write_batch(&BatchKey::real("train"), &synthetic(Workflow::Replace, 0, 9, 3)).unwrap_err();
    assert!(err.to_string().contains("already committed"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("real/train.parquet")).unwrap(), before);
    // Rows of another batch are refused.
    let err = w.write_batch(&BatchKey::synthetic(Workflow::Replace, 0, 4), &synthetic(Workflow::Replace, 0, 5, 3));
    assert!(err.is_err());
    // A second writer works beside the first; what one commits, the other sees and cannot
    // commit again.
    let mut v = PoolWriter::open(dir.path()).unwrap();
    v.write_batch(&BatchKey::synthetic(Workflow::Replace, 5, 1), &synthetic(Workflow::Replace, 5, 1, 3)).unwrap();
    let err = w.write_batch(&BatchKey::synthetic(Workflow::Replace, 5, 1), &synthetic(Workflow::Replace, 5, 1, 3));
    assert!(err.unwrap_err().to_string().contains("already committed"));
    w.write_batch(&BatchKey::synthetic(Workflow::Replace, 6, 1), &synthetic(Workflow::Replace, 6, 1, 3)).unwrap();
    assert_eq!(Pool::open(dir.path()).unwrap().manifest().files.len(), 22);
    // A commit waits for a live holder of the lock, then names it.
    let lock = dir.path().join(".lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    w.set_lock_wait(std::time::Duration::from_millis(50));
    let err = w.write_batch(&BatchKey::synthetic(Workflow::Replace, 7, 1), &synthetic(Workflow::Replace, 7, 1, 3));
    let err = err.unwrap_err().to_string();
    assert!(err.contains(".lock") && err.contains(&std::process::id().to_string()), "{err}");
    // A lock left by a dead process of this host is taken over (old lock files: the PID alone).
    std::fs::write(&lock, "4000000000\n").unwrap();
    w.write_batch(&BatchKey::synthetic(Workflow::Replace, 7, 1), &synthetic(Workflow::Replace, 7, 1, 3)).unwrap();
    assert!(!lock.exists());
    // One of another host is never taken over: its process may be alive there.
    std::fs::write(&lock, "4000000000 node-elsewhere\n").unwrap();
    let err = w.write_batch(&BatchKey::synthetic(Workflow::Replace, 8, 1), &synthetic(Workflow::Replace, 8, 1, 3));
    let err = err.unwrap_err().to_string();
    assert!(err.contains("node-elsewhere") && err.contains("4000000000"), "{err}");
    assert!(lock.exists());
    let pool = Pool::open(dir.path()).unwrap();
    pool.verify().unwrap();
    assert_eq!(pool.manifest().files.len(), 23);
    // No temporary file is left behind by the refused commits.
    let tmp: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn corrupt_files_and_newer_versions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pool = build_pool(dir.path());
    pool.verify().unwrap();
    let file = dir.path().join("synthetic/replace/chain-0/gen-0002.parquet");
    let bytes = std::fs::read(&file).unwrap();

    // Same size, flipped content: open succeeds, verify names the file.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    std::fs::write(&file, &flipped).unwrap();
    let err = Pool::open(dir.path()).unwrap().verify().unwrap_err().to_string();
    assert!(err.contains("gen-0002.parquet"), "{err}");

    // Truncated: open names the file.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = Pool::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("gen-0002.parquet") && err.contains("truncated"), "{err}");
    std::fs::write(&file, &bytes).unwrap();
    Pool::open(dir.path()).unwrap().verify().unwrap();

    // A manifest from a newer version is refused.
    let manifest = dir.path().join("pool.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("\"schema_version\": 1", "\"schema_version\": 99", 1)).unwrap();
    let err = Pool::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("pool.json") && err.contains("newer"), "{err}");
    std::fs::write(&manifest, &text).unwrap();

    // A Parquet file with a missing column, registered in the manifest, is named with the column.
    let bad = dir.path().join("real/validation.parquet");
    {
        use arrow::array::{RecordBatch, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new("example_id", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
                "thrive.pool.schema_version".into(),
                "1".to_string(),
            )]))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&bad).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let size = std::fs::metadata(&bad).unwrap().len();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == "real/validation.parquet" {
            f["bytes"] = size.into();
        }
    }
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    let err = Pool::open(dir.path()).unwrap().read_batch(&BatchKey::real("validation")).unwrap_err().to_string();
    assert!(err.contains("validation.parquet") && err.contains("missing column `source`"), "{err}");
}

#[test]
fn duplicate_example_ids_across_files_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = PoolWriter::open(dir.path()).unwrap();
    let a = synthetic(Workflow::Replace, 0, 1, 3);
    let mut b = synthetic(Workflow::Replace, 0, 2, 3);
    b[1].example_id = a[2].example_id.clone();
    w.write_batch(&BatchKey::synthetic(Workflow::Replace, 0, 1), &a).unwrap();
    w.write_batch(&BatchKey::synthetic(Workflow::Replace, 0, 2), &b).unwrap();
    let err = w.pool().verify().unwrap_err().to_string();
    assert!(err.contains("gen-0002.parquet") && err.contains("duplicate example_id"), "{err}");
    // Within one batch the writer refuses it outright.
    let mut c = synthetic(Workflow::Replace, 0, 3, 3);
    c[0].example_id = c[1].example_id.clone();
    assert!(w
        .write_batch(&BatchKey::synthetic(Workflow::Replace, 0, 3), &c)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
}

#[test]
fn a_writer_killed_mid_write_leaves_a_readable_pool() {
    let dir = tempfile::tempdir().unwrap();
    let mut committed = 0;
    for (round, delay_ms) in [150u64, 420, 700, 260, 910].into_iter().enumerate() {
        // src/bin/pool-crash-writer.rs writes batches until killed.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pool-crash-writer"))
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !dir.path().join("pool.json").exists() {
            continue; // killed before it even created the pool
        }
        let pool = Pool::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        pool.verify().unwrap_or_else(|e| panic!("round {round}: {e}"));
        let n = pool.manifest().files.len();
        assert!(n >= committed, "round {round}: committed batches were lost ({n} < {committed})");
        committed = n;
        for f in &pool.manifest().files {
            assert_eq!(pool.read_batch(&f.key).unwrap().len(), 20_000);
        }
    }
    assert!(committed > 0, "the child never committed a batch; lengthen the delays");
    // The stale lock and temporaries of the dead writer do not stop the next writer.
    let w = PoolWriter::open(dir.path()).unwrap();
    assert_eq!(w.pool().manifest().files.len(), committed);
}

/// Several processes commit batches to one pool at once while one of them is SIGKILLed mid-write:
/// every batch a writer reported committed is there, whole; nothing else is visible; the dead
/// writer's temporary file is cleaned by the next writer and the others' never were.
#[test]
fn concurrent_writers_lose_no_commit_when_one_is_killed() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    PoolWriter::open(dir.path()).unwrap();
    let spawn = |chain: u64, batches: Option<u32>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pool-crash-writer"));
        c.arg(dir.path()).arg(chain.to_string());
        if let Some(n) = batches {
            c.arg(n.to_string());
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    // Four writers of three batches each, and one that writes until it is killed.
    let writers: Vec<_> = (1..=4).map(|chain| (chain, spawn(chain, Some(3)))).collect();
    let mut victim = spawn(9, None);
    std::thread::sleep(std::time::Duration::from_millis(900));
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let mut reported = String::new();
    victim.stdout.take().unwrap().read_to_string(&mut reported).unwrap();
    let mut expected: Vec<(u64, u32)> =
        reported.lines().map(|l| (9, l.strip_prefix("committed ").unwrap().parse().unwrap())).collect();
    for (chain, child) in writers {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "writer {chain}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "writer {chain}");
        expected.extend((1..=3).map(|g| (chain, g)));
    }
    let pool = Pool::open(dir.path()).unwrap();
    pool.verify().unwrap();
    let committed: Vec<(u64, u32)> = pool
        .manifest()
        .files
        .iter()
        .map(|f| match f.key {
            BatchKey::Synthetic { chain, generation, .. } => (chain, generation),
            _ => unreachable!(),
        })
        .collect();
    for k in &expected {
        assert!(committed.contains(k), "batch {k:?} was reported committed but is missing: {committed:?}");
    }
    // The killed writer may have committed one batch more than it could report, no other.
    let extra: Vec<_> = committed.iter().filter(|k| !expected.contains(k)).collect();
    let victim_reported = expected.iter().filter(|k| k.0 == 9).count() as u32;
    assert!(extra.is_empty() || extra == [&(9, victim_reported + 1)], "unexpected batches {extra:?}");
    for f in &pool.manifest().files {
        assert_eq!(pool.read_batch(&f.key).unwrap().len(), 20_000, "{}", f.key);
    }
    // The next writer removes what the killed one left half-written.
    drop(PoolWriter::open(dir.path()).unwrap());
    let tmp: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert!(!dir.path().join(".lock").exists());
}
