"""Lesson experiments: one module per lesson, each a seeded function returning a small frozen result."""
