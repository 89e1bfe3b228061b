"""Stage avatar_reader: the rendered avatars' trait reader -> models/avatar_reader/."""
from facegan.metrics.attributes import stage_body
from facegan.metrics.avatars import run_avatar_reader
from facegan.stage import run_stage

if __name__ == "__main__":
    run_stage("avatar_reader", ["avatar_reader"], stage_body("avatar_reader", run_avatar_reader))
