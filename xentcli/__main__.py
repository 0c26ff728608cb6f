from xentcli.console import run

run()
