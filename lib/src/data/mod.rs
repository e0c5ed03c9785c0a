//! Dataset lists and label maps.

mod list;

pub use list::{read_label_names, read_list, ListEntry};
