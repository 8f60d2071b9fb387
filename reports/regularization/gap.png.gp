set terminal pngcairo size 800,500 font 'sans,10'
set output 'gap.png'
set datafile separator ','
set title 'Train accuracy minus test accuracy' noenhanced
set xlabel 'mini-batch size'
set ylabel 'train/test accuracy gap'
set grid
set key below noenhanced
set format x '%g'
set logscale x 2
plot 'batch_size.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU' ? column(5) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU', \
     'batch_size.csv' every ::1 using 2:(strcol(1) eq 'no BN' ? column(5) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN', \
     'batch_size.csv' every ::1 using 2:(strcol(1) eq 'no BN + dropout 0.3' ? column(5) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN + dropout 0.3'
