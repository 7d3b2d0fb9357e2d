from approvalctl.entry import main

main()
