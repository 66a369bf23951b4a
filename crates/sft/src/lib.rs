//! # thrive-sft
//!
//! Fine-tuning of one generation's language model: a Gemma 2 / Gemma 3 decoder owned here
//! (candle's own `gemma2` and `gemma3` give q and k no gradient and return only the last
//! position's logits, so LoRA on q_proj and k_proj could not train there, nor the loss see every
//! position), loaded from safetensors or from a Gemma 3 GGUF file; LoRA adapters compatible with
//! PEFT, the paper's next-token loss and an AdamW optimiser whose state can be checkpointed.
//!
//! Every op on the path from the loss to a trainable tensor has a backward pass (composite
//! softmax and rotary embeddings), which the parity tests against transformers + peft check
//! tensor by tensor.
//!
//! It must not read the data pool or decide which examples a generation sees: it takes
//! (prompt, response) examples.

mod data;
mod device;
mod error;
mod export;
mod gemma_config;
mod gguf;
pub mod gguf_tokenizer;
mod hub;
mod hyperparams;
mod lora;
mod loss;
pub mod matmul;
mod model;
mod ops;
mod optim;
mod settings;
mod simd;
mod train;
mod weights;

pub use data::{read_jsonl, Example, TextEncoder, Tokenized};
pub use device::{device_for, DecodeWeights, Precision, PrecisionChoice};
pub use error::{Error, Result};
pub use export::export;
pub use gemma_config::GemmaConfig;
pub use gguf::{convert_gguf, gguf_model_dir, quantized_source};
pub use gguf_tokenizer::{read_gguf, tokenizer_from_gguf};
pub use hub::resolve_model_dir;
pub use hyperparams::{Hyperparams, Mode, Schedule};
pub use lora::{LoraConfig, LoraLinear, LORA_TARGETS};
pub use loss::{loss_and_grads, loss_and_grads_planned, next_token_loss, next_token_loss_in_chunks, Batch, LossPlan};
pub use matmul::Weight;
pub use model::{Gemma, KvCache};
pub use optim::{clip_grad_norm, grads_of, AdamW, AdamWParams};
pub use settings::{SettingError, TrainSettings};
pub use train::{evaluate, train, write_metrics, RunControl, StepMetrics, TrainOutcome};
