//! The JSON header of a clip-stream record (DESIGN.md §2.1). Unknown keys are kept in `extra`
//! and written back untouched, so tools can pass through what they do not understand.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A class label: one index, or several for multi-label data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    Single(i64),
    Multi(Vec<i64>),
}

impl Label {
    /// The single label, or `None` for a multi-label.
    pub fn single(&self) -> Option<i64> {
        match self {
            Label::Single(l) => Some(*l),
            Label::Multi(_) => None,
        }
    }
}

/// Mean and std already applied to a float payload (pixel scale 0–255, per channel).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// `frames` or `features`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_clips: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_views: Option<usize>,
    /// Source frame numbers (0-based, decode order of presentation) of the T frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t1: Option<f64>,
    /// Axis names of the array: `THWC` for frames, `TC` or `C` for features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<Norm>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RecordHeader {
    pub fn frames(video: impl Into<String>) -> Self {
        Self {
            kind: "frames".into(),
            video: Some(video.into()),
            layout: Some("THWC".into()),
            ..Default::default()
        }
    }

    pub fn features(video: impl Into<String>) -> Self {
        Self { kind: "features".into(), video: Some(video.into()), ..Default::default() }
    }
}
