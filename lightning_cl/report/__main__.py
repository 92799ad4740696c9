from lightning_cl.report.writer import main

main()
