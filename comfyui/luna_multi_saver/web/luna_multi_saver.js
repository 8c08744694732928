"luna-multi-saver.job" "luna_multi_saver"
