//! Times `transcode_ladder` with the default ladder (1080p/720p/480p/240p,
//! veryfast, 2 s segments, AAC 128k) on one source, for comparison with
//! `../shared/reference/ladder.sh cmaf` run on the same source in the same
//! session (issue 5 groundwork; `make bench` will run both once transcoding
//! is wired in).
//!
//! `cargo run --release --example ladder_bench -- SRC OUTDIR`
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use std::time::Instant;
use vidcache::transcode::{LadderSpec, transcode_ladder};

fn main() {
    let mut args = std::env::args().skip(1);
    let (src, out) = (args.next().expect("SRC"), args.next().expect("OUTDIR"));
    let started = Instant::now();
    let result = transcode_ladder(src.as_ref(), out.as_ref(), &LadderSpec::default(), &mut |_| {}).expect("transcode");
    println!(
        "vidcache ladder: {:.1} s, {} frames, renditions {:?}",
        started.elapsed().as_secs_f64(),
        result.frames,
        result.renditions.iter().map(|r| format!("{}x{}", r.width, r.height)).collect::<Vec<_>>()
    );
}
