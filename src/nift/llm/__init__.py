"""The request engine every stage that calls a model uses (distill, audit's judge, eval)."""
