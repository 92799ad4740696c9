from lightning_cl.study.runner import main

main()
