from approvalctl.cli import main

main()
