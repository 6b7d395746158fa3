"""The one prompt renderer, for train and eval: a template and a conversation give text segments
(`formats.segments`), and from them the training ids and labels or the generation prompt (`encoder`)."""
