"""The regression check (`optbench regress`): did an optimizer's speedup over AdamW move?"""
