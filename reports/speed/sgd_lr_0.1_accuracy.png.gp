set terminal pngcairo size 800,500 font 'sans,10'
set output 'sgd_lr_0.1_accuracy.png'
set datafile separator ','
set title 'sgd lr 0.1: test accuracy (running statistics)' noenhanced
set xlabel 'step'
set ylabel 'test accuracy'
set grid
set key below noenhanced
set format x '%g'
set yrange [0:1]
plot 'evals.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / sgd lr 0.1' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU / sgd lr 0.1', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / sgd lr 0.1' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN after ReLU / sgd lr 0.1', \
     'evals.csv' every ::1 using 2:(strcol(1) eq 'no BN / sgd lr 0.1' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN / sgd lr 0.1'
