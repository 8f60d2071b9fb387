set terminal pngcairo size 800,500 font 'sans,10'
set output 'sgd_lr_1_loss.png'
set datafile separator ','
set title 'sgd lr 1: training loss' noenhanced
set xlabel 'step'
set ylabel 'training loss (mean over the logged steps)'
set grid
set key below noenhanced
set format x '%g'
set logscale y
set yrange [0.1:100]
plot 'curves.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / sgd lr 1' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / sgd lr 1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / sgd lr 1' ? column(3) : 1/0) with lines lw 2 title 'BN after ReLU / sgd lr 1  [NaN at step 914]', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'no BN / sgd lr 1' ? column(3) : 1/0) with lines lw 2 title 'no BN / sgd lr 1  [NaN at step 9]', \
     'sgd_lr_1_diverged.csv' every ::1 using 2:3 with points pt 2 ps 2.5 lw 2 lc rgb 'red' title 'loss NaN at this step'
