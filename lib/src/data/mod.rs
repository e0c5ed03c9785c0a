//! Dataset lists and label maps.

mod list;

pub use list::{parse_line, read_label_names, read_list, ListEntry};
