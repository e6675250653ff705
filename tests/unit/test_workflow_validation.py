"""Hostile workflows are a 400 naming the node and the input; real workflows still pass.

The bounds (WORKFLOW_MAX_*) hold against what ComfyUI will really compute: numbers sent as strings
(ComfyUI casts them), numbers that come through a link, and nodes that multiply size, frames or batch.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.workflow_validation import workflow_problems
from tests.factories import SLEEP_WORKFLOW

Workflow = dict[str, Any]

CHECKPOINT = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}}


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def sampler(latent: list[Any], steps: Any = 20, denoise: float = 1.0) -> dict[str, Any]:
    return node(
        "KSampler",
        seed=42,
        steps=steps,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=denoise,
        model=["4", 0],
        positive=["6", 0],
        negative=["7", 0],
        latent_image=latent,
    )


def txt2img(width: Any = 512, height: Any = 512, batch_size: Any = 1, steps: Any = 20) -> Workflow:
    """ComfyUI's default graph, as 'Export (API)' writes it."""
    return {
        "4": CHECKPOINT,
        "5": node("EmptyLatentImage", width=width, height=height, batch_size=batch_size),
        "6": node("CLIPTextEncode", text="a fox in the snow, anime style", clip=["4", 1]),
        "7": node("CLIPTextEncode", text="blurry", clip=["4", 1]),
        "3": sampler(["5", 0], steps=steps),
        "8": node("VAEDecode", samples=["3", 0], vae=["4", 2]),
        "9": node("SaveImage", filename_prefix="ComfyUI", images=["8", 0]),
    }


def img2img() -> Workflow:
    workflow = txt2img()
    del workflow["5"]
    workflow["10"] = node("LoadImage", image="sketch.png")
    workflow["11"] = node("VAEEncode", pixels=["10", 0], vae=["4", 2])
    workflow["3"] = sampler(["11", 0], denoise=0.6)
    return workflow


def hires_fix_and_upscale_model() -> Workflow:
    """SD 1.5 at 512, a latent hires pass at 1.5x, a 4x ESRGAN model, then back down by half."""
    workflow = txt2img()
    workflow["12"] = node("LatentUpscaleBy", upscale_method="nearest-exact", scale_by=1.5, samples=["3", 0])
    workflow["13"] = sampler(["12", 0], denoise=0.5)
    workflow["8"] = node("VAEDecode", samples=["13", 0], vae=["4", 2])
    workflow["14"] = node("UpscaleModelLoader", model_name="4x-UltraSharp.pth")
    workflow["15"] = node("ImageUpscaleWithModel", upscale_model=["14", 0], image=["8", 0])
    workflow["16"] = node("ImageScaleBy", upscale_method="lanczos", scale_by=0.5, image=["15", 0])
    workflow["9"] = node("SaveImage", filename_prefix="hires", images=["16", 0])
    return workflow


def animatediff() -> Workflow:
    """AnimateDiff-Evolved: 48 frames as a latent batch, a sliding context, RIFE doubling the frames."""
    workflow = txt2img(batch_size=48)
    workflow["20"] = node("ADE_LoadAnimateDiffModel", model_name="mm_sd_v15_v2.ckpt")
    workflow["21"] = node("ADE_ApplyAnimateDiffModelSimple", motion_model=["20", 0])
    workflow["22"] = node(
        "ADE_StandardUniformContextOptions", context_length=16, context_stride=1, context_overlap=4, closed_loop=False
    )
    workflow["23"] = node(
        "ADE_UseEvolvedSampling", model=["4", 0], m_models=["21", 0], context_options=["22", 0], beta_schedule="auto"
    )
    workflow["3"]["inputs"]["model"] = ["23", 0]
    workflow["24"] = node(
        "RIFE VFI",
        ckpt_name="rife47.pth",
        frames=["8", 0],
        clear_cache_after_n_frames=10,
        multiplier=2,
        fast_mode=True,
        ensemble=True,
        scale_factor=1.0,
    )
    workflow["9"] = node(
        "VHS_VideoCombine",
        images=["24", 0],
        frame_rate=16,
        loop_count=0,
        filename_prefix="AnimateDiff",
        format="video/h264-mp4",
        pingpong=False,
        save_output=True,
    )
    return workflow


def stable_video_diffusion() -> Workflow:
    return {
        "1": node("ImageOnlyCheckpointLoader", ckpt_name="svd_xt.safetensors"),
        "2": node("LoadImage", image="keyframe.png"),
        "3": node(
            "SVD_img2vid_Conditioning",
            clip_vision=["1", 1],
            init_image=["2", 0],
            vae=["1", 2],
            width=1024,
            height=576,
            video_frames=25,
            motion_bucket_id=127,
            fps=6,
            augmentation_level=0.0,
        ),
        "4": node("VideoLinearCFGGuidance", model=["1", 0], min_cfg=1.0),
        "5": node(
            "KSampler",
            seed=1,
            steps=20,
            cfg=2.5,
            sampler_name="euler",
            scheduler="karras",
            denoise=1.0,
            model=["4", 0],
            positive=["3", 0],
            negative=["3", 1],
            latent_image=["3", 2],
        ),
        "6": node("VAEDecode", samples=["5", 0], vae=["1", 2]),
        "7": node(
            "SaveAnimatedWEBP",
            images=["6", 0],
            filename_prefix="svd",
            fps=6,
            lossless=False,
            quality=85,
            method="default",
        ),
    }


def hunyuan_video() -> Workflow:
    return {
        "1": node("UNETLoader", unet_name="hunyuan_video_t2v_720p_bf16.safetensors", weight_dtype="default"),
        "2": node(
            "DualCLIPLoader",
            clip_name1="clip_l.safetensors",
            clip_name2="llava_llama3.safetensors",
            type="hunyuan_video",
        ),
        "3": node("CLIPTextEncode", text="a cat walks on the grass", clip=["2", 0]),
        "4": node("EmptyHunyuanLatentVideo", width=848, height=480, length=73, batch_size=1),
        "5": node("ConditioningZeroOut", conditioning=["3", 0]),
        "6": node(
            "KSampler",
            seed=1,
            steps=30,
            cfg=1.0,
            sampler_name="euler",
            scheduler="simple",
            denoise=1.0,
            model=["1", 0],
            positive=["3", 0],
            negative=["5", 0],
            latent_image=["4", 0],
        ),
        "7": node("VAELoader", vae_name="hunyuan_video_vae_bf16.safetensors"),
        "8": node(
            "VAEDecodeTiled",
            samples=["6", 0],
            vae=["7", 0],
            tile_size=256,
            overlap=64,
            temporal_size=64,
            temporal_overlap=8,
        ),
        "9": node("SaveWEBM", images=["8", 0], filename_prefix="hunyuan", codec="vp9", fps=24.0, crf=32.0),
    }


def with_nodes(workflow: Workflow, **nodes: dict[str, Any]) -> Workflow:
    workflow = copy.deepcopy(workflow)
    workflow.update(nodes)
    return workflow


def primitive_sized() -> Workflow:
    """Width and height from core primitive nodes, and from the size of a loaded image."""
    workflow = txt2img(width=["30", 0], height=["31", 0])
    workflow["30"] = node("PrimitiveInt", value=768)
    workflow["31"] = node("PrimitiveInt", value=512)
    workflow["32"] = node("LoadImage", image="pose.png")
    workflow["33"] = node("GetImageSize", image=["32", 0])
    workflow["34"] = node("EmptyLatentImage", width=["33", 0], height=["33", 1], batch_size=1)
    return workflow


@pytest.mark.parametrize(
    "workflow",
    [
        SLEEP_WORKFLOW,
        txt2img(),
        txt2img(width=1024, height=1024, batch_size=4, steps="30"),
        img2img(),
        hires_fix_and_upscale_model(),
        animatediff(),
        stable_video_diffusion(),
        hunyuan_video(),
        primitive_sized(),
    ],
    ids=["sleep", "txt2img", "sdxl-strings", "img2img", "hires-upscale", "animatediff", "svd", "hunyuan", "primitives"],
)
def test_real_workflows_are_accepted(workflow: Workflow) -> None:
    assert workflow_problems(workflow) == []


UPSCALE_CHAIN = {
    "1": node("EmptyImage", width=512, height=512, batch_size=1, color=0),
    "2": node("UpscaleModelLoader", model_name="4x-UltraSharp.pth"),
    "3": node("ImageUpscaleWithModel", upscale_model=["2", 0], image=["1", 0]),
    "4": node("ImageUpscaleWithModel", upscale_model=["2", 0], image=["3", 0]),
    "5": node("SaveImage", images=["4", 0], filename_prefix="big"),
}
BATCH_DOUBLING = {
    "1": node("EmptyImage", width=64, height=64, batch_size=1, color=0),
    **{str(n): node("ImageBatch", image1=[str(n - 1), 0], image2=[str(n - 1), 0]) for n in range(2, 10)},
    "10": node("SaveImage", images=["9", 0], filename_prefix="many"),
}
LOADED = node("LoadImage", image="photo.png")

HOSTILE = {
    "steps-as-string": (
        txt2img(steps="1000000000"),
        "node 3 (KSampler): input 'steps' = 1000000000 exceeds the limit of 200",
    ),
    "steps-unicode-digits": (txt2img(steps="١٠٠٠"), "input 'steps' = 1000 exceeds the limit"),
    "batch-as-string": (
        txt2img(batch_size="1000000"),
        "node 5 (EmptyLatentImage): input 'batch_size' = 1000000 makes a batch of 1000000; the limit is 64",
    ),
    "width-as-string": (
        txt2img(width="100000"),
        "node 5 (EmptyLatentImage): input 'width' = 100000, input 'height' = 512 makes the image 100000x512",
    ),
    "width-through-a-link": (
        with_nodes(txt2img(width=["30", 0]), **{"30": node("PrimitiveInt", value=100000)}),
        "input 'width' = 100000 (from node 30, PrimitiveInt)",
    ),
    "steps-through-a-link": (
        with_nodes(txt2img(steps=["30", 0]), **{"30": node("PrimitiveInt", value="5000")}),
        "node 3 (KSampler): input 'steps' = 5000 (from node 30, PrimitiveInt) exceeds the limit of 200 steps",
    ),
    "width-from-a-formula": (
        with_nodes(
            txt2img(width=["30", 0]),
            **{"30": node("MathExpression|pysssss", expression="a*1000", a=["31", 0])},
            **{"31": node("PrimitiveInt", value=512)},
        ),
        "node 5 (EmptyLatentImage): input 'width' comes from node 30 (MathExpression|pysssss), "
        "whose value cannot be known",
    ),
    "image-scale-by": (
        with_nodes(
            txt2img(),
            **{
                "8": node("ImageScaleBy", upscale_method="nearest-exact", scale_by=1000, image=["10", 0]),
                "10": node("VAEDecode", samples=["3", 0], vae=["4", 2]),
            },
        ),
        "node 8 (ImageScaleBy): input 'scale_by' = 1000 makes the image 512000x512000 (262144000000 pixels); "
        "the limit is 16777216 pixels",
    ),
    "image-scale-by-of-a-loaded-image": (
        {"1": LOADED, "2": node("ImageScaleBy", upscale_method="nearest-exact", scale_by=1000, image=["1", 0])},
        "node 2 (ImageScaleBy): input 'scale_by' = 1000 makes the image at least 512000x512000",
    ),
    "total-pixels": (
        {
            "1": LOADED,
            "2": node("ImageScaleToTotalPixels", upscale_method="nearest-exact", megapixels=1e6, image=["1", 0]),
        },
        "node 2 (ImageScaleToTotalPixels): input 'megapixels' = 1000000 makes the image",
    ),
    "latent-upscale-by": (
        with_nodes(
            txt2img(),
            **{"12": node("LatentUpscaleBy", upscale_method="nearest-exact", scale_by="64", samples=["3", 0])},
        ),
        "node 12 (LatentUpscaleBy): input 'scale_by' = 64 makes the image 32768x32768",
    ),
    "repeat-latent-batch": (
        with_nodes(txt2img(batch_size=64), **{"12": node("RepeatLatentBatch", amount=64, samples=["3", 0])}),
        "node 12 (RepeatLatentBatch): input 'amount' = 64 makes a batch of 4096; the limit is 64",
    ),
    "video-length": (
        with_nodes(
            stable_video_diffusion(),
            **{
                "3": {
                    **stable_video_diffusion()["3"],
                    "inputs": {**stable_video_diffusion()["3"]["inputs"], "video_frames": 1e6},
                }
            },
        ),
        "node 3 (SVD_img2vid_Conditioning): input 'video_frames' = 1000000 makes at least 1000000 frames; "
        "the limit is 2000 frames",
    ),
    "video_length-input": (
        {"1": LOADED, "2": node("SVD_img2vid_Conditioning_custom", init_image=["1", 0], video_length=1e6)},
        "input 'video_length' = 1000000 makes at least 1000000 frames",
    ),
    "frame-interpolation": (
        with_nodes(
            animatediff(),
            **{"24": {**animatediff()["24"], "inputs": {**animatediff()["24"]["inputs"], "multiplier": 1000}}},
        ),
        "node 24 (RIFE VFI): input 'multiplier' = 1000 makes 48000 images (batch x frames); the limit is 2000 images",
    ),
    "upscale-models-in-a-row": (
        UPSCALE_CHAIN,
        "node 4 (ImageUpscaleWithModel): its upscale model (x4) makes the image 8192x8192 (67108864 pixels)",
    ),
    "rebatch-then-repeat": (
        with_nodes(
            txt2img(batch_size=64),
            **{
                "12": node("RebatchLatents", latents=["3", 0], batch_size=1),
                "13": node("RepeatLatentBatch", amount=64, samples=["12", 0]),
            },
        ),
        "node 13 (RepeatLatentBatch): input 'amount' = 64 makes a batch of 4096",
    ),
    "batch-doubling": (
        BATCH_DOUBLING,
        "node 8 (ImageBatch): joining inputs 'image1', 'image2' makes a batch of 128; the limit is 64",
    ),
    "padding": (
        {
            "1": LOADED,
            "2": node("ImagePadForOutpaint", image=["1", 0], left=100000, top=0, right=100000, bottom=0, feathering=40),
        },
        "node 2 (ImagePadForOutpaint): input 'left' = 100000, input 'right' = 100000 makes the image at least",
    ),
    "steps-infinite-string": (txt2img(steps="inf"), "node 3 (KSampler): input 'steps' is not a finite number"),
    "steps-nan-string": (txt2img(steps="nan"), "node 3 (KSampler): input 'steps' is not a finite number"),
    "cfg-infinite": (
        with_nodes(
            txt2img(), **{"3": sampler(["5", 0]) | {"inputs": {**sampler(["5", 0])["inputs"], "cfg": float("inf")}}}
        ),
        "node 3 (KSampler): input 'cfg' is not a finite number",
    ),
    "self-loop": (
        with_nodes(txt2img(), **{"12": node("ImageInvert", image=["12", 0])}),
        "node 12 (ImageInvert): input 'image' links to the node itself",
    ),
    "cycle": (
        with_nodes(
            txt2img(), **{"12": node("ImageInvert", image=["13", 0]), "13": node("ImageInvert", image=["12", 0])}
        ),
        "(ImageInvert) -> 1",  # 12 -> 13 -> 12 or 13 -> 12 -> 13, with "form a cycle" (next test)
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_workflows_are_refused_naming_node_and_input(case: str) -> None:
    workflow, reason = HOSTILE[case]
    problems = workflow_problems(workflow)
    assert any(reason in problem for problem in problems), problems


def test_a_bound_is_reported_where_it_is_passed_not_at_every_node_after() -> None:
    problems = workflow_problems(HOSTILE["image-scale-by"][0])
    assert len(problems) == 1, problems


def test_a_longer_cycle_names_its_nodes_in_the_direction_data_flows() -> None:
    workflow = with_nodes(
        txt2img(),
        **{
            "12": node("ImageInvert", image=["14", 0]),
            "13": node("ImageInvert", image=["12", 0]),
            "14": node("ImageInvert", image=["13", 0]),
            "15": node("SaveImage", images=["14", 0]),
        },
    )
    (problem,) = workflow_problems(workflow)
    assert problem.startswith("nodes ") and "form a cycle" in problem
    path = [part.split(" ")[0] for part in problem.removeprefix("nodes ").split(" -> ")]
    assert set(path) == {"12", "13", "14"} and path[0] == path[-1] and len(path) == 4
    assert all(workflow[path[i + 1]]["inputs"]["image"][0] == path[i] for i in range(3)), path


def test_denied_node_classes_are_refused_by_name(settings) -> None:
    settings.WORKFLOW_NODE_CLASSES_DENIED = ["SaveImage", "ExecutePython"]
    workflow = with_nodes(txt2img(), **{"20": node("SaveImage", images=["8", 0])})
    (problem,) = workflow_problems(workflow)
    assert problem == "nodes 9, 20 (SaveImage): the node class 'SaveImage' is not allowed on this server"


def test_an_allow_list_admits_only_its_classes(settings) -> None:
    settings.WORKFLOW_NODE_CLASSES_ALLOWED = [node["class_type"] for node in txt2img().values()]
    assert workflow_problems(txt2img()) == []
    problems = workflow_problems(hires_fix_and_upscale_model())
    assert sorted(problems) == sorted(
        f"node {node_id} ({cls}): the node class {cls!r} is not allowed on this server"
        for node_id, cls in [
            ("12", "LatentUpscaleBy"),
            ("14", "UpscaleModelLoader"),
            ("15", "ImageUpscaleWithModel"),
            ("16", "ImageScaleBy"),
        ]
    )


def test_the_bounds_follow_the_settings(settings) -> None:
    settings.WORKFLOW_MAX_PIXELS = 512 * 512
    assert workflow_problems(txt2img()) == []
    (problem,) = workflow_problems(hires_fix_and_upscale_model())
    assert problem.startswith("node 12 (LatentUpscaleBy): input 'scale_by' = 1.5 makes the image 768x768")


# --- through the API: a 400 with the reasons, nothing stored ----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,reason",
    [
        (
            '{"job_type": "image", "workflow": {"1": {"class_type": "KSampler", "inputs": {"steps": "1000000000"}}}}',
            "node 1 (KSampler): input 'steps' = 1000000000 exceeds the limit of 200 steps",
        ),
        (
            '{"job_type": "image", "workflow": {"1": {"class_type": "X", "inputs": {"cfg": NaN}}}}',
            "not a finite number",
        ),
        (
            '{"job_type": "image", "workflow": {"1": {"class_type": "X", "inputs": {"cfg": 1e999}}}}',
            "not a finite number",
        ),
        (
            '{"job_type": "image", "workflow": {"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}, '
            '"2": {"class_type": "Y", "inputs": {"b": ["1", 0]}}}}',
            "form a cycle",
        ),
    ],
)
def test_hostile_workflow_through_the_api_is_a_400_with_the_reason(api: APIClient, body: str, reason: str) -> None:
    response = api.post("/api/jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert reason in json.dumps(response.json()["workflow"])
    assert not Job.objects.exists()
