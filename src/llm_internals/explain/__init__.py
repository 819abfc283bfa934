"""The explain path: record what library code computes, then render it as a lesson."""

from llm_internals.explain.lesson import Lesson, Section, Step, Table
from llm_internals.trace import Recording, is_recording, record, recording

__all__ = ["Lesson", "Recording", "Section", "Step", "Table", "is_recording", "record", "recording"]
