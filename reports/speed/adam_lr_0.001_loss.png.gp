set terminal pngcairo size 800,500 font 'sans,10'
set output 'adam_lr_0.001_loss.png'
set datafile separator ','
set title 'adam lr 0.001: training loss' noenhanced
set xlabel 'step'
set ylabel 'training loss (mean over the logged steps)'
set grid
set key below noenhanced
set format x '%g'
set logscale y
set yrange [0.1:100]
plot 'curves.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / adam lr 0.001' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / adam lr 0.001', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'BN after ReLU / adam lr 0.001' ? column(3) : 1/0) with lines lw 2 title 'BN after ReLU / adam lr 0.001', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'no BN / adam lr 0.001' ? column(3) : 1/0) with lines lw 2 title 'no BN / adam lr 0.001'
