from fmb_tui.app import main

main()
