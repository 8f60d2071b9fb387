set terminal pngcairo size 800,500 font 'sans,10'
set output 'accuracy_vs_momentum.png'
set datafile separator ','
set title 'Test accuracy, one example at a time, after 3000 steps' noenhanced
set xlabel 'BN momentum (weight of each new batch)'
set ylabel 'test accuracy'
set grid
set key below noenhanced
set format x '%g'
set logscale x 10
set yrange [0:1]
plot 'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(3) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'running averages (eval mode)', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(5) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'population statistics (recomputed)', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(4) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'own statistics (batch of one)', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(6) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'test-batch statistics (batch of 100)'
