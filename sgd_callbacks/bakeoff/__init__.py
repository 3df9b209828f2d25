"""The bake-off: problems, trials and tuning, scoring, the report"""
