"""Semantic labels: the class set and CARLA palette (classes), the semantic field maths (semantic_field)."""
