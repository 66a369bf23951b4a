//! `--response-only` (sft.response_only): the loss covers exactly the response's tokens and EOS,
//! the paper's default every token of `user: {prompt}\nassistant: {response}` and EOS.

use std::path::PathBuf;
use thrive_sft::{Example, TextEncoder};

#[test]
fn response_only_targets_exactly_the_response_and_eos() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/model");
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json")).unwrap();
    for (prompt, response) in [
        ("What colour is a whale?", "The whale is blue. It lives in the sea."),
        ("Name two animals.", "assistant: a cat, and a dog"),
        ("x", "y"),
    ] {
        let ex = Example { prompt: prompt.into(), response: response.into() };
        let all = enc.encode(&ex, false).unwrap();
        let resp = enc.encode(&ex, true).unwrap();
        assert_eq!(all.ids, resp.ids);
        assert!(all.target.iter().all(|&t| t == 1));
        assert_eq!(*resp.ids.last().unwrap(), enc.eos());
        // The targets are one contiguous run ending at EOS ...
        let first = resp.target.iter().position(|&t| t == 1).unwrap();
        assert!(first > 0 && resp.target[first..].iter().all(|&t| t == 1), "{:?}", resp.target);
        // ... whose text is the response, and the untargeted tokens are `user: …\nassistant: `.
        let n = resp.ids.len();
        let text = enc.tokenizer().decode(&resp.ids[first..n - 1], true).unwrap();
        assert_eq!(text.trim(), response, "{prompt:?}");
        let head = enc.tokenizer().decode(&resp.ids[..first], true).unwrap();
        assert_eq!(head.trim_end(), format!("user: {prompt}\nassistant:"), "{prompt:?}");
    }
}
