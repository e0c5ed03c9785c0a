//! Dataset lists, label maps, and sharding of inputs.

mod list;
mod shard;

pub use list::{parse_line, read_label_names, read_list, ListEntry};
pub use shard::{Shard, VideoOrdinals};
