set terminal pngcairo size 800,500 font 'sans,10'
set output 'test_accuracy.png'
set datafile separator ','
set title 'Test accuracy' noenhanced
set xlabel 'mini-batch size'
set ylabel 'test accuracy'
set grid
set key below noenhanced
set format x '%g'
set logscale x 2
plot 'batch_size.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'BN before ReLU', \
     'batch_size.csv' every ::1 using 2:(strcol(1) eq 'no BN' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN', \
     'batch_size.csv' every ::1 using 2:(strcol(1) eq 'no BN + dropout 0.3' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'no BN + dropout 0.3'
