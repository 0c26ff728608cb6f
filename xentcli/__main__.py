from xentcli.cli import run

run()
