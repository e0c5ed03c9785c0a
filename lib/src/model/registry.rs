//! The registry of architectures (DESIGN.md §2.5): one row per architecture with its name, the
//! task it serves, the function that builds (or loads) it, the checkpoint formats `vconvert`
//! imports it from and, for zoo models, the input it was trained on. Tools ask for the task they serve
//! ([`require_task`]) and refuse the others with one clear line; a new model is a file, a row
//! here and a parity fixture.

use super::captioner::{load_ets_captioner, CaptionerLoader};
use super::grounder::{load_tall_grounder, GrounderLoader};
use super::localizer::{load_bmn_localizer, load_bsn_localizer, load_ctcn_localizer, LocalizerLoader};
use super::mvit::build_mvit;
use super::recognizer::{
    build_recognizer2d, build_resnet3d, build_sequence, build_slowfast, build_x3d, RecognizerBuilder,
};
use super::stnet::build_stnet;
use super::timesformer::build_timesformer;
use anyhow::{bail, Result};

/// What a model does, and so which tools run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Class scores for clips of frames (`vclassify`, `vfeat`, `vtrain` from lists): a
    /// [`super::Recognizer`].
    Recognizer,
    /// Class scores for a video's feature sequence (VideoTag's second stage): also a
    /// [`super::Recognizer`], fed by `vfeat`.
    SequenceRecognizer,
    /// Temporal proposals for a video's feature sequence (`vpropose`): a [`super::Localizer`].
    Localizer,
    /// Segments of a video's feature sequence that match sentence queries (`vground`): a
    /// [`super::Grounder`].
    Grounder,
    /// Sentences describing a video's feature sequence (`vcaption`): a [`super::Captioner`].
    Captioner,
}

impl Task {
    /// The task in a sentence's words.
    pub fn noun(self) -> &'static str {
        match self {
            Task::Recognizer => "recognizer of frames",
            Task::SequenceRecognizer => "recognizer of feature sequences",
            Task::Localizer => "temporal localizer",
            Task::Grounder => "temporal grounder of sentences",
            Task::Captioner => "video captioner",
        }
    }

    /// The tools that run a model of this task.
    pub fn tools(self) -> &'static str {
        match self {
            Task::Recognizer => "vclassify and vfeat run it, vtrain trains it from video lists",
            Task::SequenceRecognizer => {
                "vclassify runs it on vfeat's features, vtrain trains it from feature stores"
            }
            Task::Localizer => {
                "vpropose runs it on feature sequences, vtrain trains it with --gt annotations"
            }
            Task::Grounder => {
                "vground runs it on feature sequences and --queries, vtrain trains it with --gt queries"
            }
            Task::Captioner => "vcaption runs it on feature sequences, vtrain trains it with --gt captions",
        }
    }
}

/// The input a zoo model was trained on: T frames every `interval` (dense sampling), short side
/// and center crop for testing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZooInput {
    pub frames: usize,
    pub interval: usize,
    pub short_side: u32,
    pub crop_size: u32,
}

/// How a row's model comes to be: recognizers are built from a config and parameters (fresh or
/// loaded), localizers loaded from their model file.
#[derive(Clone, Copy, Debug)]
pub enum Builder {
    Recognizer(RecognizerBuilder),
    Localizer(LocalizerLoader),
    Grounder(GrounderLoader),
    Captioner(CaptionerLoader),
}

/// One architecture.
#[derive(Clone, Copy, Debug)]
pub struct ArchInfo {
    pub name: &'static str,
    pub task: Task,
    pub builder: Builder,
    /// Checkpoint formats `vconvert` imports it from.
    pub imports: &'static [&'static str],
    /// pytorchvideo's model zoo settings (MODEL_ZOO.md, Kinetics-400) for the 3D CNNs.
    pub input: Option<ZooInput>,
}

const TORCH_2D: &[&str] = &["torchvision", "mmaction2"];
const TORCH_3D: &[&str] = &["pytorchvideo", "mmaction2"];
const PYTORCHVIDEO: &[&str] = &["pytorchvideo"];
const PADDLE: &[&str] = &["paddlevideo"];

const fn zoo(frames: usize, interval: usize, short_side: u32, crop_size: u32) -> Option<ZooInput> {
    Some(ZooInput { frames, interval, short_side, crop_size })
}

const fn row(
    name: &'static str,
    task: Task,
    builder: Builder,
    imports: &'static [&'static str],
    input: Option<ZooInput>,
) -> ArchInfo {
    ArchInfo { name, task, builder, imports, input }
}

const RECOGNIZER2D: Builder = Builder::Recognizer(build_recognizer2d);
const RESNET3D: Builder = Builder::Recognizer(build_resnet3d);
const SLOWFAST: Builder = Builder::Recognizer(build_slowfast);
const X3D: Builder = Builder::Recognizer(build_x3d);
const SEQUENCE: Builder = Builder::Recognizer(build_sequence);
const TIMESFORMER: Builder = Builder::Recognizer(build_timesformer);
const MVIT: Builder = Builder::Recognizer(build_mvit);
const STNET: Builder = Builder::Recognizer(build_stnet);
const BMN: Builder = Builder::Localizer(load_bmn_localizer);
const BSN: Builder = Builder::Localizer(load_bsn_localizer);
const CTCN: Builder = Builder::Localizer(load_ctcn_localizer);
const TALL: Builder = Builder::Grounder(load_tall_grounder);
const ETS: Builder = Builder::Captioner(load_ets_captioner);

use Task::{Captioner, Grounder, Localizer, Recognizer, SequenceRecognizer};

/// Every registered architecture.
pub const REGISTRY: &[ArchInfo] = &[
    row("tsn_r18", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsn_r34", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsn_r50", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsn_r101", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsm_r18", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsm_r34", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsm_r50", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("tsm_r101", Recognizer, RECOGNIZER2D, TORCH_2D, None),
    row("attention_lstm", SequenceRecognizer, SEQUENCE, PADDLE, None),
    row("attention_cluster", SequenceRecognizer, SEQUENCE, PADDLE, None),
    row("nextvlad", SequenceRecognizer, SEQUENCE, PADDLE, None),
    row("c2d_r50", Recognizer, RESNET3D, PYTORCHVIDEO, zoo(8, 8, 256, 224)),
    row("i3d_r50", Recognizer, RESNET3D, TORCH_3D, zoo(8, 8, 256, 224)),
    row("slow_r50", Recognizer, RESNET3D, TORCH_3D, zoo(8, 8, 256, 224)),
    row("r2plus1d_r50", Recognizer, RESNET3D, PYTORCHVIDEO, zoo(16, 4, 256, 224)),
    row("csn_r101", Recognizer, RESNET3D, TORCH_3D, zoo(32, 2, 256, 224)),
    // SLOWFAST_8x8: the fast pathway's 32 frames every 2 (slow: 8 of them, inside the model).
    row("slowfast_r50", Recognizer, SLOWFAST, TORCH_3D, zoo(32, 2, 256, 224)),
    row("slowfast_r101", Recognizer, SLOWFAST, TORCH_3D, zoo(32, 2, 256, 224)),
    // X3D: hub/x3d.py input sizes; test short side as pytorchvideo's hub tutorial.
    row("x3d_xs", Recognizer, X3D, TORCH_3D, zoo(4, 12, 182, 182)),
    row("x3d_s", Recognizer, X3D, TORCH_3D, zoo(13, 6, 182, 182)),
    row("x3d_m", Recognizer, X3D, TORCH_3D, zoo(16, 5, 256, 256)),
    row("x3d_l", Recognizer, X3D, TORCH_3D, zoo(16, 5, 356, 356)),
    row("pptsm_r50vd", Recognizer, RECOGNIZER2D, PADDLE, None),
    row("pptsmv2_lcnetv2", Recognizer, RECOGNIZER2D, PADDLE, None),
    row("pptimesformer_vit_b", Recognizer, TIMESFORMER, PADDLE, None),
    row("timesformer_vit_b", Recognizer, TIMESFORMER, &["timesformer"], None),
    // MViT-B: pytorchvideo's hub models (16 frames every 4, 32 every 3); torchvision's
    // mvit_v1_b weights transform (short side 256, crop 224).
    row("mvit_base_16x4", Recognizer, MVIT, &["pytorchvideo", "torchvision"], zoo(16, 4, 256, 224)),
    row("mvit_base_32x3", Recognizer, MVIT, &["pytorchvideo", "torchvision"], zoo(32, 3, 256, 224)),
    // StNet: the 2019 PaddlePaddle video zoo's (fluid parameters); 7 segments of 5 frames.
    row("stnet_r50", Recognizer, STNET, &["paddle_fluid"], None),
    row("bmn", Localizer, BMN, &["paddlevideo", "mmaction2"], None),
    // BSN: MMAction2's TEM + PGM + PEM.
    row("bsn", Localizer, BSN, &["mmaction2"], None),
    // C-TCN: the 2019 PaddlePaddle video zoo's detector (fluid parameters).
    row("ctcn", Localizer, CTCN, &["paddle_fluid"], None),
    // TALL: the 2019 PaddlePaddle video zoo's CTRL grounder (fluid parameters).
    row("tall", Grounder, TALL, &["paddle_fluid"], None),
    // ETS: the 2019 PaddlePaddle video zoo's captioner (fluid parameters).
    row("ets", Captioner, ETS, &["paddle_fluid"], None),
];

/// The names of every registered architecture, in table order.
pub fn arch_names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|a| a.name)
}

/// The architectures of `task`, in table order.
pub fn archs_for(task: Task) -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().filter(move |a| a.task == task).map(|a| a.name)
}

/// The row of `arch`, or an error listing the known ones.
pub fn arch_info(arch: &str) -> Result<&'static ArchInfo> {
    match REGISTRY.iter().find(|a| a.name == arch) {
        Some(a) => Ok(a),
        None => {
            bail!("unknown architecture {arch:?} (known: {})", arch_names().collect::<Vec<_>>().join(", "))
        }
    }
}

/// The row of `arch` when it serves one of `tasks`; otherwise one line saying what it is, what
/// was wanted and which tools run it.
pub fn require_task(arch: &str, tasks: &[Task]) -> Result<&'static ArchInfo> {
    let info = arch_info(arch)?;
    if !tasks.contains(&info.task) {
        let wanted: Vec<&str> = tasks.iter().map(|t| t.noun()).collect();
        bail!("{arch} is a {}, not a {} ({})", info.task.noun(), wanted.join(" or "), info.task.tools());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_tasks_are_refused_with_the_right_tools() {
        let mut names: Vec<&str> = arch_names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        for a in REGISTRY {
            let localizer = matches!(a.builder, Builder::Localizer(_));
            assert_eq!(localizer, a.task == Task::Localizer, "{}: builder of another task", a.name);
            let grounder = matches!(a.builder, Builder::Grounder(_));
            assert_eq!(grounder, a.task == Task::Grounder, "{}: builder of another task", a.name);
            let captioner = matches!(a.builder, Builder::Captioner(_));
            assert_eq!(captioner, a.task == Task::Captioner, "{}: builder of another task", a.name);
        }
        assert_eq!(archs_for(Task::Grounder).collect::<Vec<_>>(), ["tall"]);
        assert_eq!(archs_for(Task::Captioner).collect::<Vec<_>>(), ["ets"]);
        let e = require_task("ets", &[Task::Localizer]).unwrap_err();
        assert!(
            e.to_string().contains("ets is a video captioner, not a temporal localizer (vcaption"),
            "{e}"
        );
        let e = require_task("tall", &[Task::Localizer]).unwrap_err();
        assert!(
            e.to_string()
                .contains("tall is a temporal grounder of sentences, not a temporal localizer (vground"),
            "{e}"
        );
        assert_eq!(archs_for(Task::Localizer).collect::<Vec<_>>(), ["bmn", "bsn", "ctcn"]);
        let e = require_task("bmn", &[Task::Recognizer, Task::SequenceRecognizer]).unwrap_err();
        assert!(
            e.to_string().starts_with("bmn is a temporal localizer, not a recognizer of frames or"),
            "{e}"
        );
        assert!(e.to_string().contains("(vpropose runs it"), "{e}");
        let e = require_task("tsm_r50", &[Task::Localizer]).unwrap_err();
        assert!(
            e.to_string().contains("tsm_r50 is a recognizer of frames, not a temporal localizer (vclassify"),
            "{e}"
        );
        assert!(arch_info("tsm_r52").unwrap_err().to_string().contains("known: tsn_r18"));
    }
}
