//! HF checkpoint IO: reading model.safetensors or sharded checkpoints (memory-mapped header
//! validation, positioned reads for data), and writing them streamed and atomically. Upscaling
//! (dus.rs), merging and the trainer's final save all go through here.
//!
//! - dtype.rs: the stored dtypes (f32, bf16, f16) and conversions between their bytes
//! - header.rs: safetensors headers, validated on read (errors name file and tensor), built on write
//! - read.rs: `Checkpoint::open`, the index file, `validate` against config.json
//! - load.rs: tensor data: `load`, `load_as`, chunked `stream_bytes`
//! - write.rs: `write_checkpoint` with a per-tensor `TensorSink`, sharding, `save_model`
//! - atomic.rs: the temporary folder, fsync and rename, copied-through tokenizer files
//! - progress.rs: `OnBytes`, the byte-progress callback of reads and writes

mod atomic;
mod dtype;
mod header;
mod load;
mod progress;
mod read;
mod write;

pub(crate) use atomic::copy_through;
pub use atomic::{sync_dir, write_synced, StagingDir, COPY_THROUGH};
pub use dtype::{convert_bytes, decode_bf16, decode_f32, encode_bf16, encode_f32, SafeDType};
pub use load::CHUNK_BYTES;
pub use progress::OnBytes;
pub use read::{is_rotary_inv_freq, Checkpoint, TensorInfo, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
pub use write::{
    assign_shards, save_model, save_model_into, write_checkpoint, write_checkpoint_into, PlannedTensor,
    TensorSink, WriteOptions, WriteReport,
};
