"""Datasets: readers per file type, row layouts, chat-template rendering with masking, tokenised examples, whole-dataset scans and the validation split."""
