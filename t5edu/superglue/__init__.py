"""SuperGLUE as text-to-text: formatting, metrics, evaluation and fine-tuning (chapter 14).

`python -m t5edu.superglue evaluate --model DIR --task boolq --data DIR` scores a checkpoint;
`python -m t5edu.superglue format --task boolq --data DIR` prints formatted examples.
scikit-learn (metrics), tqdm (progress) and `datasets` (`source="hf"`) load on first use only.
"""

from t5edu.superglue.evaluate import (
    TaskResult,
    constant_predictions,
    evaluate,
    evaluate_examples,
    generate_texts,
    oracle_predictions,
    results_table,
    score_predictions,
)
from t5edu.superglue.finetune import encode_pairs, finetune, text_pairs
from t5edu.superglue.loaders import data_file, hf_rows_to_official, load_examples, load_rows
from t5edu.superglue.metrics import (
    accuracy,
    exact_match_by_group,
    f1_binary,
    f1_macro,
    gender_parity,
    matthews,
    normalize_answer,
    record_metrics,
    superglue_score,
    task_metrics,
    task_score,
    token_f1,
)
from t5edu.superglue.postprocess import (
    INVALID,
    prediction_value,
    text_to_label,
    wsc_prediction_value,
    wsc_referent_matches,
)
from t5edu.superglue.preprocessors import (
    PREPROCESSORS,
    Text2TextExample,
    preprocess,
    preprocess_rows,
    record_passage,
    wsc_fix_span,
)
from t5edu.superglue.tasks import DIAGNOSTIC_TASKS, MAIN_TASKS, TASKS, TaskSpec, get_task

__all__ = [
    "DIAGNOSTIC_TASKS", "INVALID", "MAIN_TASKS", "PREPROCESSORS", "TASKS", "TaskResult",
    "TaskSpec", "Text2TextExample", "accuracy", "constant_predictions", "data_file",
    "encode_pairs", "evaluate", "evaluate_examples", "exact_match_by_group", "f1_binary",
    "f1_macro", "finetune", "gender_parity", "generate_texts", "get_task", "hf_rows_to_official",
    "load_examples", "load_rows", "matthews", "normalize_answer", "oracle_predictions",
    "prediction_value", "preprocess", "preprocess_rows", "record_metrics", "record_passage",
    "results_table", "score_predictions", "superglue_score", "task_metrics", "task_score",
    "text_pairs", "text_to_label", "token_f1", "wsc_fix_span", "wsc_prediction_value",
    "wsc_referent_matches",
]  # fmt: skip
