"""Write the tiny Qwen2.5-VL preset's tokenizer and processor files into qwen2_5_vl_tiny/.

Run by hand (the outputs are committed; nothing at build time runs this):

    pip install tokenizers==0.23.3
    python runtime/assets/make_tiny_tokenizer.py

The tokenizer is a byte-level BPE built the way Qwen2's is: NFC normaliser, Qwen2's
pre-tokenizer regex followed by a byte-level mapping, byte-level decoder, no unknown token. It is
trained on a corpus of MedMNIST-style multiple-choice prompts and answers (the official label
names of the twelve 2D MedMNIST datasets, their imaging modalities, option letters A-K, the
<think>/<answer> tags, yes/no and numbers), so the prompts medbridge writes tokenize compactly.
Qwen's special tokens are appended after the trained vocabulary with Qwen's names and in Qwen's
order, so `<|image_pad|>` and friends behave as in the real checkpoints (the ids differ).
Training runs single-threaded on a fixed-seed corpus, so the output is reproducible.
"""

import json
import os
import random
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

OUT = Path(__file__).resolve().parent / "qwen2_5_vl_tiny"
# 1002 trained tokens + 22 added tokens = 1024, the preset's vocab_size.
BPE_VOCAB = 1002

# Qwen2's pre-tokenizer split (contractions, letter runs, single digits, punctuation, spaces).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL's added tokens in id order: (content, special).
QWEN_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the hub checkpoints).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The twelve 2D MedMNIST v2 datasets: imaging modality and official label names.
MEDMNIST = {
    "pathmnist": ("colon pathology", [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]),
    "chestmnist": ("chest X-ray", [
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]),
    "dermamnist": ("dermatoscope", [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions"]),
    "octmnist": ("retinal OCT", [
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]),
    "pneumoniamnist": ("chest X-ray", ["normal", "pneumonia"]),
    "retinamnist": ("fundus camera", ["0", "1", "2", "3", "4"]),
    "breastmnist": ("breast ultrasound", ["malignant", "normal, benign"]),
    "bloodmnist": ("blood cell microscope", [
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
        "monocyte", "neutrophil", "platelet"]),
    "tissuemnist": ("kidney cortex microscope", [
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
        "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
        "Proximal Tubule Segments", "Thick Ascending Limb"]),
    "organamnist": ("abdominal CT (axial)", [
        "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
        "lung-left", "lung-right", "pancreas", "spleen"]),
    "organcmnist": ("abdominal CT (coronal)", [
        "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
        "lung-left", "lung-right", "pancreas", "spleen"]),
    "organsmnist": ("abdominal CT (sagittal)", [
        "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
        "lung-left", "lung-right", "pancreas", "spleen"]),
}

LETTERS = "ABCDEFGHIJK"

QUESTIONS = [
    "Which of the following best describes this {modality} image?",
    "What is shown in this {modality} image?",
    "This is a {modality} image. Which class does it belong to?",
    "Look at the {modality} image and choose the correct diagnosis.",
    "Identify the tissue or finding in the {modality} image.",
    "Based on the image, what is the most likely category?",
]

INSTRUCTIONS = [
    "Answer with the option's letter from the given choices directly.",
    "Answer with a single letter.",
    "Think step by step inside <think></think> tags, then give the letter inside <answer></answer> tags.",
    "First reason about the image in <think> </think>, then put the final answer in <answer> </answer>.",
    "Please answer yes or no.",
]

REASONING = [
    "The image shows {label}, which is typical of this class.",
    "I can see features consistent with {label}.",
    "The texture and color suggest {label} rather than the other options.",
    "There is no sign of {other}, so the best match is {label}.",
    "Comparing the options, {label} fits the visible structures best.",
    "The cells look regular and the pattern matches {label}.",
]

# Words a model's free-text reasoning about such images tends to use.
DESCRIPTIVE = (
    "shape boundary irregular regular density opacity lesion region left right upper lower bright "
    "dark pattern staining nuclei nucleus cytoplasm purple pink blue granular round oval elongated "
    "border margin symmetric asymmetric healthy abnormal disease patient scan view contrast "
    "structure organ tissue cell cells size small large visible present absent likely unlikely "
    "because therefore however option correct incorrect image shows suggests consistent with "
    "without evidence sign finding diagnosis clear blurred texture smooth rough dense sparse "
    "fluid air bone soft area center edge multiple single several many few no any most least "
    "increased decreased thickened enlarged compressed dilated layer layers vessel vessels "
    "retina lung heart skin colon blood kidney breast abdomen chest"
).split()


def corpus(rng: random.Random):
    """Yield prompt/answer texts covering the MedMNIST multiple-choice vocabulary."""
    for _ in range(40):
        for flag, (modality, labels) in MEDMNIST.items():
            options = labels[:]
            rng.shuffle(options)
            options = options[: len(LETTERS)]
            answer = rng.randrange(len(options))
            label = options[answer]
            other = options[(answer + 1) % len(options)]
            letter = LETTERS[answer]
            lines = [rng.choice(QUESTIONS).format(modality=modality), "Options:"]
            lines += [f"{LETTERS[i]}. {name}" for i, name in enumerate(options)]
            lines.append(rng.choice(INSTRUCTIONS))
            yield "\n".join(lines)
            reason = rng.choice(REASONING).format(label=label, other=other)
            yield f"<think>{reason}</think>\n<answer>{letter}</answer>"
            yield f"<think>\n{reason}\n</think>\n<answer>{letter}. {label}</answer>"
            yield f"The answer is {letter}."
            yield f"The answer is {letter}. {label}"
            yield f"{letter}"
            yield f"Is there {label} in this {modality} image? Answer yes or no. {rng.choice(['Yes', 'No', 'yes', 'no'])}."
            yield f"Dataset: {flag}. Label {answer}: {label}. Image size {rng.choice([28, 64, 128, 224])}x{rng.choice([28, 64, 128, 224])}."
    for _ in range(300):
        yield " ".join(rng.choice(DESCRIPTIVE) for _ in range(12)).capitalize() + "."
    for n in range(0, 1000):
        yield f"{n} {n / 10:.1f} {n}%"


def main() -> None:
    rng = random.Random(20261121)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus(rng), trainer)
    for content, special in QWEN_ADDED_TOKENS:
        token = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])

    OUT.mkdir(parents=True, exist_ok=True)
    tok.save(str(OUT / "tokenizer.json"), pretty=False)

    added = {
        str(tok.token_to_id(content)): {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for content, special in QWEN_ADDED_TOKENS
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [c for c, special in QWEN_ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (OUT / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    # MedMNIST images are 28-224 px. factor = patch 14 x merge 2 = 28; min_pixels 84*84 turns a
    # 28 or 64 px image into 84x84 (a 6x6 patch grid, 9 image tokens) and max_pixels 112*112 caps
    # larger images at an 8x8 grid (16 image tokens), so a CPU forward stays small.
    preprocessor_config = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": 56 * 56,
        "merge_size": 2,
        "min_pixels": 28 * 28,
        "patch_size": 7,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "temporal_patch_size": 2,
    }
    (OUT / "preprocessor_config.json").write_text(json.dumps(preprocessor_config, indent=2) + "\n")

    print(f"vocab (with added tokens): {tok.get_vocab_size(with_added_tokens=True)}")
    for content, _ in QWEN_ADDED_TOKENS:
        print(f"{content}: {tok.token_to_id(content)}")


if __name__ == "__main__":
    main()
