"""`python -m backups`: take one backup and apply retention (the chart's CronJob runs this)."""

import argparse
import sys

from backups.cli import main_backup

sys.exit(main_backup(argparse.Namespace(backup_command="run")))
