"""Knowledge distillation: a smaller student trained on the digits data with the current model as
its teacher (soft labels at a temperature, mixed with the hard labels by alpha). The same student is
also trained without the teacher, so the row shows what the teacher added."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import NotApplicable, Technique, Work
from .metrics import parameter_count
from .training import evaluate, train


class Distill(Technique):
    kind: Literal["distill"] = "distill"
    version: Literal[2] = 2  # 2: the student's initial weights are seeded (were torch's global random state)
    width: int = Field(8, ge=1, description="the student digits CNN's first-layer channels (the teacher has 16)")
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the teacher's soft labels; 1 - alpha for the hard labels")
    epochs: int = Field(20, ge=1)
    lr: float = Field(3e-3, gt=0)
    primary = "width"

    def uses_train_data(self) -> bool:
        return True

    def apply(self, work: Work) -> Work:
        import torch

        from ..models.digits import DigitsCNN

        if (work.base.source, work.base.name) != ("zoo", "digits_cnn"):
            raise NotApplicable(f"distillation trains a smaller digits CNN as the student, which only digits_cnn's task fits, "
                                f"not {work.base.name}'s", "distil digits_cnn, or leave 'distill' out for this model")
        if work.base.train_data is None or work.base.train_data.labels is None:
            raise NotApplicable("distillation compares a student trained with and without its teacher on labelled data, and "
                                "digits_cnn's [data] train has no labels", "give its training data labels, or leave 'distill' out")
        teacher = work.require_module(self.kind)
        torch.manual_seed(0)  # the same student whatever ran before it in this process
        student, alone = DigitsCNN(self.width), DigitsCNN(self.width)
        alone.load_state_dict(student.state_dict())  # the same initial weights, the same batches
        note = train(student, work.base, self.epochs, self.lr, teacher=teacher, temperature=self.temperature,
                     alpha=self.alpha)
        train(alone, work.base, self.epochs, self.lr)
        figures = {"teacher_accuracy": evaluate(teacher, work.base), "student_accuracy": evaluate(student, work.base),
                   "student_without_teacher_accuracy": evaluate(alone, work.base),
                   "teacher_params": parameter_count(teacher), "student_params": parameter_count(student)}
        work.module = student
        work.metrics["distillation"] = figures
        scores = ("held-out accuracy in PyTorch: teacher {teacher_accuracy:.2%}, student {student_accuracy:.2%}, the same "
                  "student without the teacher {student_without_teacher_accuracy:.2%}".format(**figures)
                  if figures["teacher_accuracy"] is not None else "no held-out labels to score them on")
        work.notes.append(f"student width {self.width} ({figures['student_params']} params vs the teacher's "
                          f"{figures['teacher_params']}): {note}; {scores}")
        return work
