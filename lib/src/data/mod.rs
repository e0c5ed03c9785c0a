//! Dataset lists, label maps, and sharding of inputs.

mod charades;
mod datasets;
mod labels;
mod list;
mod queries;
mod segments;
mod shard;
pub mod tfrecord;
mod youtube8m;

pub use charades::charades_lists;
pub use datasets::{
    hmdb51_lists, kinetics_lists, sthv2_lists, ucf101_lists, write_dataset_lists, DatasetLists,
};
pub use labels::{parse_label_names, read_label_names};
pub use list::{parse_line, parse_list_text, read_list, ListEntry};
pub use queries::{read_queries, GroundingQuery};
pub use segments::{
    align_prediction_ids, find_video_id, parse_segment_predictions, read_annotations,
    read_segment_ground_truth, read_segment_predictions, video_id_forms, AnnotatedVideo, Segment,
    SegmentGroundTruth, SegmentPredictions,
};
pub use shard::{merge_shard_lines, Shard, VideoOrdinals};
pub use youtube8m::{
    convert_split, dequantize, parse_video, read_nextvlad_eigen_scale, read_vocabulary, youtube8m_lists,
    Level, SplitSummary, Youtube8mOptions, Youtube8mSummary, MAX_FRAMES,
};
