"""The match/action language: AST, parser, printer and normalization to classifier matches."""
